"""The ``hhpulse-retrain`` pipeline: collect -> validate (+ fold into history) -> dataset (the
window) -> monitor (served traffic) and features -> candidates -> evaluate -> gate -> (refit ->
publish -> deploy), with an exit handler that records the outcome.

The gate measures the held-out fit; when it passes, the winners are refitted on every
labelled row (train + validation + test) on the training node pool, and that refit is the
bundle that is published and deployed.

Cluster-only settings (the image and its registry, pull secrets, the GPU node pool, the
credentials Secret, resources, time limits and retries) are compile options of
:func:`build_pipeline`, never environment variables read at import time.
"""

from dataclasses import dataclass, field

from components._image import PIPELINE_IMAGE_NAME, SERVING_IMAGE_NAME, image_ref
from components.build_dataset import build_dataset
from components.collect_vacancies import collect_vacancies
from components.deploy_model import deploy_model
from components.evaluate_candidates import evaluate_candidates
from components.featurize import featurize
from components.monitor_served import monitor_served
from components.publish_model import publish_model
from components.record_outcome import record_outcome
from components.refit_winners import refit_winners
from components.select_winner import select_winner
from components.train_baseline import train_baseline
from components.train_candidate import train_candidate
from components.validate_vacancies import validate_vacancies
from kfp import dsl, kubernetes

from hhpulse import __version__
from hhpulse.config import TASKS, load_candidates
from hhpulse.flows.deploy import DEFAULT_RESOURCES

PIPELINE_NAME = "hhpulse-retrain"
XGB_CANDIDATES = [c.to_dict() for c in load_candidates() if c.kind == "xgboost"]
LINEAR_CANDIDATES = [c.to_dict() for c in load_candidates() if c.kind != "xgboost"]


# How long a step's pod may run (seconds; Kubernetes' activeDeadlineSeconds, through
# kfp.kubernetes.set_timeout). A hung step fails and is retried instead of holding the schedule:
# the recurring run allows one run at a time, so one stuck run would stop every later one.
STEP_TIMEOUTS = {
    "collect": 4 * 3600,  # hh.ru at its rate limits, every query past the 2000-result cap
    "fold": 3600,  # validate + fold into history
    "data": 3600,  # build dataset, monitor served traffic
    "features": 2 * 3600,  # featurize
    "train": 4 * 3600,  # each candidate and baseline, the refit
    "large": 2 * 3600,  # evaluate, gate
    "small": 1800,  # record outcome, publish
    "deploy": 3600,  # deploy: its own wait for Ready (deploy_timeout_seconds) and a rollback fit in it
}


@dataclass(frozen=True)
class ClusterOptions:
    """Compile-time cluster settings (the Helm chart passes its values here)."""

    secret_name: str = "hhpulse-s3"
    # the image of every step: [registry/]hhpulse-pipeline:tag (tag: the package version)
    image_registry: str = ""
    image_tag: str = ""
    image_pull_secrets: tuple[str, ...] = ()
    image_pull_policy: str = ""  # "" leaves Kubernetes' default
    accelerator_type: str = "nvidia.com/gpu"
    accelerator_limit: int = 1
    # no node selector by default: GPU nodes are found by their resource and taint; a pool's
    # provider label (GKE: cloud.google.com/gke-accelerator=nvidia-l4) pins a type when wanted
    gpu_node_selector: tuple[tuple[str, str], ...] = ()
    gpu_tolerations: tuple[tuple[str, str, str, str], ...] = (
        ("nvidia.com/gpu", "Exists", "", "NoSchedule"),
    )  # key, op, value, effect
    # (cpu request, memory request, cpu limit, memory limit) per kind of step. The memory comes
    # from `make bench BENCH=scale` at daily --demo-size 3000 runs (65k open vacancies a run,
    # hh.ru's IT volume), scaled to a year's 180-day window: request >= the peak, limit >= 1.5x
    # it, rounded up. docs/operations.md ("Sizing the pods") has the figures and how to scale them.
    small: tuple[str, str, str, str] = ("250m", "512M", "1", "2G")  # outcome, publish, deploy
    collect: tuple[str, str, str, str] = ("250m", "1G", "1", "2G")  # 0.51 GB (demo source: +0.5 GB)
    fold: tuple[str, str, str, str] = ("500m", "1G", "1", "2G")  # validate + fold: 0.71 GB, flat
    data: tuple[str, str, str, str] = ("1", "2G", "4", "3G")  # build dataset: 1.6 GB at a full window
    features: tuple[str, str, str, str] = ("1", "3G", "4", "4G")  # featurize: 2.5 GB at a full window
    large: tuple[str, str, str, str] = ("1", "4G", "4", "16G")  # evaluate, gate, candidates: not measured
    use_gpu: bool = True
    # candidates trained at once per ParallelFor: one pod each on the cluster; on one machine
    # (kfp.local) concurrent XGBoost processes only fight over the same cores
    parallelism: int = 4
    # per kind of step (keys of STEP_TIMEOUTS): seconds, overriding the default
    step_timeouts: tuple[tuple[str, int], ...] = ()
    retries: int = 2  # of every step but publish and deploy, 1 minute apart, then 2 and 4
    # the whole run's deadline (Argo's activeDeadlineSeconds): also ends a run whose pod never
    # starts (a Pending pod has no activeDeadlineSeconds clock). 0: none. Needs KFP >= 2.17.
    run_timeout_seconds: int = 0
    # the steps' user and group (the image's uid 10001): with runAsNonRoot, KFP >= 2.16 then
    # builds step pods that pass the `restricted` Pod Security level
    run_as_user: int = 10001
    extra: dict[str, str] = field(default_factory=dict)

    @property
    def pipeline_image(self) -> str:
        return image_ref(PIPELINE_IMAGE_NAME, self.image_registry, self.image_tag)

    @property
    def serving_image(self) -> str:
        return image_ref(SERVING_IMAGE_NAME, self.image_registry, self.image_tag)

    def timeout(self, kind: str) -> int:
        return dict(STEP_TIMEOUTS, **dict(self.step_timeouts))[kind]


def _resources(task: dsl.PipelineTask, spec: tuple[str, str, str, str]) -> dsl.PipelineTask:
    cpu_req, mem_req, cpu_lim, mem_lim = spec
    return (
        task.set_cpu_request(cpu_req)
        .set_memory_request(mem_req)
        .set_cpu_limit(cpu_lim)
        .set_memory_limit(mem_lim)
    )


def _secret(task: dsl.PipelineTask, opts: ClusterOptions) -> dsl.PipelineTask:
    kubernetes.use_secret_as_env(
        task,
        secret_name=opts.secret_name,
        secret_key_to_env={
            "AWS_ACCESS_KEY_ID": "AWS_ACCESS_KEY_ID",
            "AWS_SECRET_ACCESS_KEY": "AWS_SECRET_ACCESS_KEY",
        },
    )
    return task


def _platform(
    task: dsl.PipelineTask, opts: ClusterOptions, kind: str, *, retry: bool = True
) -> dsl.PipelineTask:
    """The image (registry, tag, pull secrets and policy), the non-root user, the time limit and
    the retries of one step."""
    task.container_spec.image = opts.pipeline_image
    if opts.image_pull_secrets:
        kubernetes.set_image_pull_secrets(task, list(opts.image_pull_secrets))
    if opts.image_pull_policy:
        kubernetes.set_image_pull_policy(task, opts.image_pull_policy)
    if opts.run_as_user:
        kubernetes.set_security_context(
            task, run_as_user=opts.run_as_user, run_as_group=opts.run_as_user, run_as_non_root=True
        )
    kubernetes.set_timeout(task, opts.timeout(kind))
    if retry and opts.retries:
        task.set_retry(opts.retries, backoff_duration="60s", backoff_factor=2.0, backoff_max_duration="3600s")
    return task


def _training_pool(task: dsl.PipelineTask, opts: ClusterOptions) -> dsl.PipelineTask:
    """The training node pool: large resources, and the GPU (accelerator, node selector,
    tolerations) when ``opts.use_gpu``."""
    _resources(task, opts.large)
    if opts.use_gpu:
        task.set_accelerator_type(opts.accelerator_type).set_accelerator_limit(opts.accelerator_limit)
        for label_key, label_value in opts.gpu_node_selector:
            kubernetes.add_node_selector(task, label_key=label_key, label_value=label_value)
        for key, operator, value, effect in opts.gpu_tolerations:
            kubernetes.add_toleration(
                task, key=key, operator=operator, value=value or None, effect=effect or None
            )
    return task


def build_pipeline(opts: "ClusterOptions | None" = None):  # type: ignore[no-untyped-def]
    """The pipeline function, configured with ``opts``."""
    opts = opts or ClusterOptions()
    config = dsl.PipelineConfig(active_deadline_seconds=opts.run_timeout_seconds or None)

    @dsl.pipeline(
        name=PIPELINE_NAME,
        description=f"hhpulse {__version__}: retrain the salary and demand cohort models on new hh.ru vacancies, "
        "gate the winner against the champion, publish it, and deploy it with KServe.",
        pipeline_config=config if opts.run_timeout_seconds else None,
    )
    def hhpulse_retrain(
        store: str = "s3://hhpulse/prod",
        s3_endpoint: str = "http://minio.hhpulse.svc.cluster.local:9000",
        source: str = "api",
        queries: list = ["Python", "Data Scientist", "Аналитик данных"],  # noqa: B006 - KFP reads defaults
        area: str = "113",
        contact: str = "hhpulse@example.com",
        demo_size: int = 150,
        allow_mixed_data: bool = False,
        max_bad_fraction: float = 0.2,
        random_split: bool = False,
        window_days: int = 180,
        xgb_candidates: list = XGB_CANDIDATES,  # noqa: B006
        linear_candidates: list = LINEAR_CANDIDATES,  # noqa: B006
        device: str = "auto",
        primary_metric: str = "roc_auc_ovo",
        margin: float = 0.0,
        ece_margin: float = 0.02,
        deploy_mode: str = "apply",
        namespace: str = "hhpulse",
        service_name: str = "hhpulse",
        serving_image: str = opts.serving_image,
        service_account: str = "hhpulse-predictor",
        model_name: str = "hhpulse",
        min_replicas: int = 1,
        max_replicas: int = 3,
        serving_resources: dict = DEFAULT_RESOURCES,  # noqa: B006
        image_pull_secrets: list = [],  # noqa: B006
        canary_traffic_percent: int = 0,
        deploy_timeout_seconds: int = 600,
        logger_url: str = "",
        grpc_port: int = 0,
    ):
        """Retrain hhpulse.

        Args:
            store: Where raw runs, history and models live: s3://bucket/prefix (MinIO) or a folder.
            s3_endpoint: The MinIO/S3 endpoint URL; empty for AWS S3 or a local folder.
            source: Where vacancies come from: api (hh.ru), demo (the synthetic emulator) or file:PATH.
            queries: hh.ru search texts; each is collected completely (past the 2000-result cap).
            area: hh.ru area id (113 = Russia; empty = the source default).
            contact: E-mail or URL sent in the HH-User-Agent header, as hh.ru asks.
            demo_size: Demo source only: vacancies opened per simulated day.
            allow_mixed_data: Collect real data into a store of synthetic demo data, or the other way round (refused otherwise).
            max_bad_fraction: Fail the run when more than this share of rows breaks the data contract.
            random_split: Split at random instead of by time (newest rows as the test set).
            window_days: The training window: the open vacancies plus those closed in this many days before the newest run (0: all of history).
            xgb_candidates: XGBoost candidate configs (trained on the GPU pool).
            linear_candidates: Logistic-regression candidate configs (CPU). Each task's TF-IDF + logistic regression baseline is trained as well, always.
            device: XGBoost device: auto, cuda or cpu (falls back to the CPU without a GPU).
            primary_metric: Metric that picks winners on validation and gates against the champion.
            margin: How much better (mean primary metric over tasks) the challenger must be to replace the champion.
            ece_margin: The gate refuses a challenger whose top-label ECE is worse than the champion's by more than this.
            deploy_mode: apply (create/patch the InferenceService) or render (write the manifest to the store).
            namespace: Namespace of the InferenceService.
            service_name: Name of the InferenceService.
            serving_image: The predictor image.
            service_account: The predictor's ServiceAccount (its Secret carries the S3 credentials and endpoint for KServe's storage initializer).
            model_name: The model's name in the predictor's URLs (/v1/models/<name>:predict).
            min_replicas: The predictor's minimum replicas.
            max_replicas: The predictor's maximum replicas.
            serving_resources: The predictor container's resources: {"requests": {"cpu", "memory"}, "limits": {"cpu", "memory"}}.
            image_pull_secrets: Secrets for pulling the predictor image (names).
            canary_traffic_percent: 1-99 sends that share of requests to the new version as a canary while the previous version serves the rest; 0 (or 100) promotes the new version fully.
            deploy_timeout_seconds: How long to wait for Ready before rolling back.
            logger_url: URL of hhpulse logsink for KServe's logger (mode all: every request and its response as CloudEvents); empty: no logger.
            grpc_port: Also serve gRPC (the Open Inference Protocol) on this container port, named h2c; 0: HTTP only.
        """
        outcome = record_outcome(
            store=store, s3_endpoint=s3_endpoint, run_id=dsl.PIPELINE_JOB_ID_PLACEHOLDER
        ).set_display_name("record outcome")
        _resources(_secret(outcome, opts), opts.small)
        _platform(outcome, opts, "small")
        with dsl.ExitHandler(outcome, name="retrain"):
            collect = (
                collect_vacancies(
                    store=store,
                    s3_endpoint=s3_endpoint,
                    source=source,
                    queries=queries,
                    area=area,
                    contact=contact,
                    demo_size=demo_size,
                    allow_mixed_data=allow_mixed_data,
                )
                .set_display_name("collect vacancies")
                .set_caching_options(False)
            )
            validate = validate_vacancies(
                store=store,
                s3_endpoint=s3_endpoint,
                run_id=collect.outputs["Output"],
                max_bad_fraction=max_bad_fraction,
            ).set_display_name("validate (data contract)")
            data = build_dataset(
                store=store, s3_endpoint=s3_endpoint, random_split=random_split, window_days=window_days
            )
            data.set_display_name("build dataset").after(validate).set_caching_options(False)
            # the served log against the champion, once the history holds this run's closes
            monitor = monitor_served(store=store, s3_endpoint=s3_endpoint).after(data)
            monitor.set_display_name("monitor served traffic").set_caching_options(False)
            feats = featurize(dataset=data.outputs["dataset"]).set_display_name("featurize (razdel + TF-IDF)")
            with dsl.ParallelFor(
                xgb_candidates, parallelism=opts.parallelism, name="xgboost-candidates"
            ) as cand:
                xgb = train_candidate(features=feats.outputs["features"], candidate=cand, device=device)
                xgb.set_display_name("train XGBoost candidate")
                _training_pool(xgb, opts)
                _platform(xgb, opts, "train")
            with dsl.ParallelFor(
                linear_candidates, parallelism=opts.parallelism, name="linear-candidates"
            ) as lcand:
                lin = train_candidate(features=feats.outputs["features"], candidate=lcand, device="cpu")
                lin.set_display_name("train linear candidate")
                _resources(lin, opts.large)
                _platform(lin, opts, "train")
            # not a parameter: every run trains each task's TF-IDF + logistic regression baseline
            with dsl.ParallelFor(list(TASKS), parallelism=opts.parallelism, name="baselines") as btask:
                base = train_baseline(features=feats.outputs["features"], task=btask)
                base.set_display_name("train baseline (TF-IDF + LR)")
                _resources(base, opts.large)
                _platform(base, opts, "train")
            evaluate = evaluate_candidates(
                store=store,
                s3_endpoint=s3_endpoint,
                dataset=data.outputs["dataset"],
                features=feats.outputs["features"],
                xgb_models=dsl.Collected(xgb.outputs["model"]),
                linear_models=dsl.Collected(lin.outputs["model"]),
                baseline_models=dsl.Collected(base.outputs["model"]),
                primary_metric=primary_metric,
            ).set_display_name("evaluate candidates")
            evaluate.after(monitor)  # its report carries the monitor's section
            gate = (
                select_winner(
                    store=store,
                    s3_endpoint=s3_endpoint,
                    dataset=data.outputs["dataset"],
                    features=feats.outputs["features"],
                    results=evaluate.outputs["results"],
                    report=evaluate.outputs["report"],
                    xgb_models=dsl.Collected(xgb.outputs["model"]),
                    linear_models=dsl.Collected(lin.outputs["model"]),
                    baseline_models=dsl.Collected(base.outputs["model"]),
                    margin=margin,
                    primary_metric=primary_metric,
                    ece_margin=ece_margin,
                )
                .set_display_name("select winner (gate vs champion)")
                .set_caching_options(False)
            )
            with dsl.If(gate.outputs["Output"] == True, name="challenger-wins"):  # noqa: E712 - KFP condition
                # the gate measured the held-out fit; the published bundle is the winners refitted
                # on every labelled row, on the same node pool as the XGBoost training
                refit = refit_winners(
                    store=store,
                    s3_endpoint=s3_endpoint,
                    dataset=data.outputs["dataset"],
                    heldout=gate.outputs["bundle"],
                    device=device,
                )
                refit.set_display_name("refit winners on every row").set_caching_options(False)
                _training_pool(_secret(refit, opts), opts)
                _platform(refit, opts, "train")
                pub = publish_model(store=store, s3_endpoint=s3_endpoint, bundle=refit.outputs["bundle"])
                pub.set_display_name("publish model").set_caching_options(False)
                dep = (
                    deploy_model(
                        store=store,
                        s3_endpoint=s3_endpoint,
                        bundle=refit.outputs["bundle"],
                        model_uri=pub.output,
                        mode=deploy_mode,
                        namespace=namespace,
                        service_name=service_name,
                        serving_image=serving_image,
                        service_account=service_account,
                        model_name=model_name,
                        min_replicas=min_replicas,
                        max_replicas=max_replicas,
                        resources=serving_resources,
                        image_pull_secrets=image_pull_secrets,
                        canary_traffic_percent=canary_traffic_percent,
                        timeout_seconds=deploy_timeout_seconds,
                        logger_url=logger_url,
                        grpc_port=grpc_port,
                    )
                    .set_display_name("deploy (KServe)")
                    .set_caching_options(False)
                )
            # the monitor reads the same history window as the dataset step (and the served log)
            sizes = {
                collect: opts.collect,
                validate: opts.fold,
                data: opts.data,
                monitor: opts.data,
                feats: opts.features,
            }
            kinds = {
                collect: "collect",
                validate: "fold",
                data: "data",
                monitor: "data",
                feats: "features",
                evaluate: "large",
                gate: "large",
                pub: "small",
                dep: "deploy",
            }
            for t, kind in kinds.items():
                _secret(t, opts)
                _resources(t, sizes.get(t, opts.large if t in (evaluate, gate) else opts.small))
                # never retried: publish moves the champion pointer with a conditional write, and a
                # failed deploy has rolled the pointer back; a retry would act on a stale decision
                _platform(t, opts, kind, retry=t not in (pub, dep))

    return hhpulse_retrain


hhpulse_retrain = build_pipeline()
