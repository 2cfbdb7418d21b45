"""A deterministic SYNTHETIC hh.ru job market, for the demo and the tests.

Nothing here is real data. Every vacancy this module makes is synthetic: employer
names start with ``[SYNTHETIC]``, and the emulator marks its responses as such.

The market is built so that the models have something real to learn:

* salary depends on the role and on seniority (intern < junior < middle < senior < lead),
  and both are visible in the responsibility text;
* salaries come in several currencies (mostly RUR) and as gross or net;
* vacancies open every day, are re-published (``published_at`` moves forward, as on
  hh.ru), and close after a lifetime whose typical length depends on the role, so
  lifecycle tracking and demand labels can be exercised.

Everything is a pure function of ``(seed, day)``: the same market comes back every time.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from functools import lru_cache
from typing import Any

SYNTHETIC_TAG = "[SYNTHETIC]"
MARKET_START = datetime(2026, 1, 1, tzinfo=timezone.utc)
REPUBLISH_MAX_DAYS = 30  # hh.ru listings expire after 30 days unless re-published
MAX_LIFETIME_DAYS = 120

# Currency rates as /dictionaries gives them: units of the currency per 1 RUR.
CURRENCY_RATES: dict[str, float] = {
    "RUR": 1.0,
    "USD": 0.0108,
    "EUR": 0.0099,
    "KZT": 4.8,
    "BYR": 0.035,
    "UZS": 136.0,
}
CURRENCY_MIX: tuple[tuple[str, float], ...] = (
    ("RUR", 0.84),
    ("USD", 0.05),
    ("EUR", 0.03),
    ("KZT", 0.05),
    ("BYR", 0.02),
    ("UZS", 0.01),
)


@dataclass(frozen=True)
class Role:
    key: str
    titles: tuple[str, ...]
    duties: tuple[str, ...]
    skills: tuple[str, ...]
    base_salary: float  # monthly gross RUB for a middle specialist
    mean_lifetime_days: float  # how long such a vacancy typically stays open
    professional_role: str


ROLES: tuple[Role, ...] = (
    Role(
        "python",
        ("Python-разработчик", "Backend-разработчик (Python)", "Разработчик Python"),
        (
            "Разработка backend-сервисов на Python",
            "Проектирование REST API",
            "Написание unit-тестов и code review",
            "Оптимизация запросов к PostgreSQL",
            "Интеграция с внешними сервисами",
        ),
        ("Python", "Django", "FastAPI", "PostgreSQL", "Docker", "Git"),
        210_000,
        24,
        "96",
    ),
    Role(
        "data",
        ("Data Scientist", "ML-инженер", "Специалист по машинному обучению"),
        (
            "Построение моделей машинного обучения",
            "Анализ данных и проверка гипотез",
            "Вывод моделей в продакшн",
            "Подготовка признаков и датасетов",
            "A/B-тестирование",
        ),
        ("Python", "pandas", "scikit-learn", "SQL", "PyTorch", "статистика"),
        240_000,
        30,
        "165",
    ),
    Role(
        "qa",
        ("Тестировщик", "QA-инженер", "Инженер по тестированию"),
        (
            "Ручное и автоматизированное тестирование",
            "Составление тест-кейсов и чек-листов",
            "Заведение и сопровождение баг-репортов",
            "Регрессионное тестирование релизов",
        ),
        ("тест-дизайн", "Postman", "SQL", "Selenium", "Jira"),
        140_000,
        16,
        "124",
    ),
    Role(
        "devops",
        ("DevOps-инженер", "SRE-инженер", "Инженер инфраструктуры"),
        (
            "Поддержка CI/CD",
            "Администрирование Kubernetes-кластеров",
            "Настройка мониторинга и алертинга",
            "Автоматизация инфраструктуры",
        ),
        ("Kubernetes", "Terraform", "Ansible", "Linux", "Prometheus"),
        250_000,
        28,
        "160",
    ),
    Role(
        "sales",
        ("Менеджер по продажам", "Менеджер по работе с клиентами", "Специалист по продажам"),
        (
            "Поиск и привлечение новых клиентов",
            "Ведение переговоров и заключение договоров",
            "Выполнение плана продаж",
            "Работа с CRM",
        ),
        ("навыки переговоров", "CRM", "грамотная речь", "опыт продаж"),
        95_000,
        12,
        "70",
    ),
    Role(
        "courier",
        ("Курьер", "Курьер-доставщик", "Пеший курьер"),
        (
            "Доставка заказов клиентам",
            "Получение заказов на складе",
            "Приём оплаты от клиентов",
            "Соблюдение сроков доставки",
        ),
        ("ответственность", "пунктуальность", "смартфон"),
        70_000,
        5,
        "58",
    ),
    Role(
        "accountant",
        ("Бухгалтер", "Главный бухгалтер", "Бухгалтер по расчётам"),
        (
            "Ведение бухгалтерского и налогового учёта",
            "Подготовка отчётности",
            "Работа с первичной документацией",
            "Расчёт заработной платы",
        ),
        ("1С", "МСФО", "налоговый учёт", "Excel"),
        100_000,
        20,
        "18",
    ),
    Role(
        "designer",
        ("Дизайнер интерфейсов", "UX/UI-дизайнер", "Продуктовый дизайнер"),
        (
            "Проектирование интерфейсов веб- и мобильных приложений",
            "Создание прототипов в Figma",
            "Проведение UX-исследований",
            "Развитие дизайн-системы",
        ),
        ("Figma", "UX", "портфолио", "дизайн-системы"),
        150_000,
        22,
        "34",
    ),
)


@dataclass(frozen=True)
class Seniority:
    key: str
    title_prefix: str
    multiplier: float
    duties: tuple[str, ...]
    experience: str
    lifetime_factor: float


SENIORITIES: tuple[Seniority, ...] = (
    Seniority(
        "intern",
        "Стажёр",
        0.38,
        ("Стажировка под руководством наставника", "Обучение в процессе работы"),
        "noExperience",
        0.7,
    ),
    Seniority(
        "junior", "Младший", 0.62, ("Выполнение задач под контролем старших коллег",), "noExperience", 0.8
    ),
    Seniority("middle", "", 1.0, ("Самостоятельное решение задач",), "between1And3", 1.0),
    Seniority(
        "senior",
        "Ведущий",
        1.55,
        ("Ответственность за ключевые задачи направления", "Менторство младших специалистов"),
        "between3And6",
        1.4,
    ),
    Seniority(
        "lead",
        "Руководитель направления:",
        2.1,
        ("Руководство командой", "Найм и развитие сотрудников", "Стратегическое планирование"),
        "moreThan6",
        1.8,
    ),
)
SENIORITY_WEIGHTS = (0.08, 0.2, 0.4, 0.22, 0.1)
AREAS: tuple[tuple[str, str, float], ...] = (
    ("1", "Москва", 1.2),
    ("2", "Санкт-Петербург", 1.05),
    ("4", "Новосибирск", 0.85),
    ("88", "Казань", 0.8),
    ("3", "Екатеринбург", 0.85),
)
SCHEDULES = (("fullDay", "Полный день"), ("remote", "Удаленная работа"), ("flexible", "Гибкий график"))


@dataclass(frozen=True, slots=True)
class SyntheticVacancy:
    """One synthetic vacancy with its whole life (internal; see :meth:`to_item`).

    Slotted: a market of a few thousand new vacancies a day keeps a few hundred thousand.
    """

    id: str
    role: Role
    seniority: Seniority
    name: str
    responsibility: str
    requirement: str
    salary: dict[str, Any] | None
    area: tuple[str, str]
    employer: tuple[str, str]
    schedule: tuple[str, str]
    created_at: datetime
    closes_at: datetime
    republish_days: int

    def is_open(self, at: datetime) -> bool:
        return self.created_at <= at < self.closes_at

    def published_at(self, at: datetime) -> datetime:
        """The latest (re)publication time at ``at``; hh.ru moves it on each re-publication."""
        elapsed = max(0.0, (at - self.created_at).total_seconds())
        period = self.republish_days * 86400
        return self.created_at + timedelta(seconds=period * math.floor(elapsed / period))

    def to_item(self, at: datetime) -> dict[str, Any]:
        """The vacancy as a ``GET /vacancies`` search item at time ``at``."""
        pub = _fmt(self.published_at(at))
        return {
            "id": self.id,
            "premium": False,
            "name": self.name,
            "department": None,
            "has_test": False,
            "area": {
                "id": self.area[0],
                "name": self.area[1],
                "url": f"https://api.hh.ru/areas/{self.area[0]}",
            },
            "salary": dict(self.salary) if self.salary else None,
            "type": {"id": "open", "name": "Открытая"},
            "address": None,
            "published_at": pub,
            "created_at": pub,  # search items: created_at == published_at, as on hh.ru
            "archived": False,
            "url": f"https://api.hh.ru/vacancies/{self.id}?host=hh.ru",
            "alternate_url": f"https://hh.ru/vacancy/{self.id}",
            "employer": {"id": self.employer[0], "name": self.employer[1], "trusted": True},
            "snippet": {"requirement": self.requirement, "responsibility": self.responsibility},
            "contacts": None,
            "schedule": {"id": self.schedule[0], "name": self.schedule[1]},
            "professional_roles": [{"id": self.role.professional_role, "name": self.role.titles[0]}],
            "experience": {"id": self.seniority.experience, "name": self.seniority.experience},
            "employment": {"id": "full", "name": "Полная занятость"},
        }

    def to_full(self, at: datetime) -> dict[str, Any]:
        """The vacancy as ``GET /vacancies/{id}``: adds ``initial_created_at`` and ``archived``."""
        item = self.to_item(min(at, self.closes_at - timedelta(seconds=1)))
        item["initial_created_at"] = _fmt(self.created_at)
        item["archived"] = not self.is_open(at)
        item["description"] = f"<p>{self.responsibility}</p><p>{self.requirement}</p>"
        return item


def _fmt(dt: datetime) -> str:
    """hh.ru's timestamp format: Moscow time with a +0300 offset."""
    return dt.astimezone(timezone(timedelta(hours=3))).strftime("%Y-%m-%dT%H:%M:%S%z")


def _snippet(parts: list[str], limit: int = 200) -> str:
    text = ". ".join(parts) + "."
    if len(text) > limit:  # hh.ru truncates snippets and adds "..."
        text = text[:limit].rsplit(" ", 1)[0].rstrip(".,;") + "..."
    return text


class Market:
    """The synthetic market: ``snapshot(day)`` lists the vacancies open on a simulated day.

    Args:
        seed: the market's seed; the same seed gives the same market.
        daily_new: vacancies opened per simulated day (a few thousand are open at once
            with the default).
        salary_share: share of vacancies that publish a salary.
    """

    def __init__(self, seed: int = 7, daily_new: int = 150, salary_share: float = 0.65) -> None:
        if daily_new < 1:
            raise ValueError("daily_new must be at least 1")
        self.seed = seed
        self.daily_new = daily_new
        self.salary_share = salary_share

    @staticmethod
    def clock(day: int) -> datetime:
        """The simulated collection time of ``day``: noon UTC."""
        return MARKET_START + timedelta(days=day, hours=12)

    def snapshot(self, day: int) -> list[SyntheticVacancy]:
        """Vacancies open at :meth:`clock` of ``day``, newest publication first."""
        at = self.clock(day)
        open_ = [
            v for d in range(day - MAX_LIFETIME_DAYS, day + 1) for v in self._opened_on(d) if v.is_open(at)
        ]
        open_.sort(key=lambda v: (v.published_at(at), v.id), reverse=True)
        return open_

    def items(self, day: int) -> list[dict[str, Any]]:
        """:meth:`snapshot` as API search items."""
        at = self.clock(day)
        return [v.to_item(at) for v in self.snapshot(day)]

    def vacancy(self, vacancy_id: str) -> SyntheticVacancy | None:
        """Look a vacancy up by id (ids encode the day they were opened)."""
        try:
            n = int(vacancy_id) - 100_000_000
        except ValueError:
            return None
        day, idx = divmod(n, 10_000)
        day -= 1000
        if idx >= self.daily_new:
            return None
        return self._opened_on(day)[idx]

    def _opened_on(self, day: int) -> tuple[SyntheticVacancy, ...]:
        return _opened_on(self.seed, self.daily_new, self.salary_share, day)

    # -- what only the market knows: the truth behind the demand labels ---------------------
    def expected_lifetime_days(self, vacancy_id: str) -> float | None:
        """The mean lifetime the market draws this vacancy's lifetime from (role x seniority)."""
        v = self.vacancy(vacancy_id)
        return None if v is None else v.role.mean_lifetime_days * v.seniority.lifetime_factor

    def true_lifetime_days(self, vacancy_id: str) -> float | None:
        """How long this vacancy really stays open (creation to close), in days."""
        v = self.vacancy(vacancy_id)
        return None if v is None else (v.closes_at - v.created_at).total_seconds() / 86400

    def cohort_probabilities(self, vacancy_id: str, edges: tuple[float, float]) -> tuple[float, ...] | None:
        """The oracle: P(lifetime < edges[0]), P(edges[0] <= lifetime < edges[1]), P(lifetime >= edges[1]).

        Lifetimes are Gamma(shape 2, scale mean/2), clipped to [0.5, MAX_LIFETIME_DAYS - 1]
        days; the clipping never moves a lifetime across an edge inside that range. No
        model that reads only the vacancy can rank demand better than these probabilities:
        they are the best a model can learn, so they are the yardstick for its AUC.
        """
        mean = self.expected_lifetime_days(vacancy_id)
        if mean is None:
            return None
        lo, hi = (gamma2_cdf(e, mean) for e in edges)
        return (lo, hi - lo, 1.0 - hi)


@lru_cache(maxsize=4096)
def _opened_on(seed: int, daily_new: int, salary_share: float, day: int) -> tuple[SyntheticVacancy, ...]:
    rng = random.Random(f"{seed}:{day}")
    out = []
    for idx in range(daily_new):
        vid = str(100_000_000 + (day + 1000) * 10_000 + idx)  # ids grow with creation time, as on hh.ru
        role = rng.choice(ROLES)
        sen = rng.choices(SENIORITIES, weights=SENIORITY_WEIGHTS)[0]
        area = rng.choice(AREAS)
        created = MARKET_START + timedelta(days=day, seconds=rng.randrange(86400))
        mean = role.mean_lifetime_days * sen.lifetime_factor
        lifetime = min(MAX_LIFETIME_DAYS - 1, max(0.5, rng.gammavariate(2.0, mean / 2.0)))
        title = rng.choice(role.titles)
        name = f"{sen.title_prefix} {title}".strip() if sen.title_prefix else title
        duties = rng.sample(role.duties, k=min(len(role.duties), rng.randint(2, 3)))
        duties = list(sen.duties[: rng.randint(1, len(sen.duties))]) + duties
        rng.shuffle(duties)
        skills = rng.sample(role.skills, k=min(len(role.skills), rng.randint(2, 4)))
        req = [f"Знание {', '.join(skills)}", _experience_text(sen.key)]
        salary = None
        if rng.random() < salary_share:
            gross_rub = role.base_salary * sen.multiplier * area[2] * math.exp(rng.gauss(0.0, 0.18))
            salary = _salary(rng, gross_rub)
        out.append(
            SyntheticVacancy(
                id=vid,
                role=role,
                seniority=sen,
                name=name,
                responsibility=_snippet(duties),
                requirement=_snippet(req),
                salary=salary,
                area=(area[0], area[1]),
                employer=(
                    str(900_000 + rng.randrange(400)),
                    f"{SYNTHETIC_TAG} Компания №{rng.randrange(400)}",
                ),
                schedule=rng.choice(SCHEDULES),
                created_at=created,
                closes_at=created + timedelta(days=lifetime),
                republish_days=rng.choice((7, 14, REPUBLISH_MAX_DAYS)),
            )
        )
    return tuple(out)


def gamma2_cdf(days: float, mean: float) -> float:
    """CDF of the market's lifetime law, Gamma(shape 2, scale mean/2), clipped as lifetimes are."""
    if days <= 0.5:
        return 0.0
    if days > MAX_LIFETIME_DAYS - 1:
        return 1.0
    x = days / (mean / 2.0)
    return 1.0 - math.exp(-x) * (1.0 + x)


def _experience_text(key: str) -> str:
    return {
        "intern": "Студенты последних курсов, опыт не требуется",
        "junior": "Опыт работы от полугода",
        "middle": "Опыт работы от 2 лет",
        "senior": "Опыт работы от 5 лет, опыт наставничества",
        "lead": "Опыт руководства командой от 3 лет",
    }[key]


def _salary(rng: random.Random, gross_rub: float) -> dict[str, Any]:
    currency = rng.choices([c for c, _ in CURRENCY_MIX], weights=[w for _, w in CURRENCY_MIX])[0]
    gross = rng.random() < 0.5
    amount = gross_rub if gross else gross_rub * (1 - 0.13)  # net = gross minus 13% income tax
    amount *= CURRENCY_RATES[currency]
    step = 1000 if currency in ("RUR", "KZT", "UZS") else 10
    shape = rng.random()
    lo = round(amount * 0.85 / step) * step
    hi = round(amount * 1.15 / step) * step
    if shape < 0.5:
        frm, to = lo, hi
    elif shape < 0.8:
        frm, to = round(amount / step) * step, None
    else:
        frm, to = None, round(amount / step) * step
    return {"from": frm, "to": to, "currency": currency, "gross": gross}
