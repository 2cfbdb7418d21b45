"""``hhpulse schedule``: create or update the recurring run (6-field, seconds-first, UTC cron)."""

from __future__ import annotations

import argparse
import sys

from hhpulse.commands.submit import add_kfp_args


def configure(p: argparse.ArgumentParser) -> None:
    add_kfp_args(p)
    p.add_argument(
        "--cron",
        default="0 0 3 * * *",
        help="KFP cron: 6 fields, SECONDS first, in the scheduler's time zone (KFP's CRON_SCHEDULE_TIMEZONE, "
        "UTC unless changed) [%(default)s = 03:00 UTC daily]",
    )
    p.add_argument(
        "--schedule-name", default="hhpulse-retrain-schedule", help="recurring run name [%(default)s]"
    )


def run(args: argparse.Namespace) -> int:
    from pipelines.kfp_api import CronError, KfpApiError, ParameterError, validate_cron

    try:
        validate_cron(args.cron)  # fail before uploading anything
        from hhpulse.commands.submit import prepare

        api, pid, vid, eid, params = prepare(args)
        rid, replaced = api.schedule(
            args.schedule_name, args.cron, pid, vid, eid, params, service_account=args.service_account
        )
    except (CronError, ParameterError) as exc:
        print(f"hhpulse schedule: {exc}", file=sys.stderr)
        return 2
    except (KfpApiError, ValueError, OSError) as exc:
        print(f"hhpulse schedule: {exc}", file=sys.stderr)
        return 1
    what = f"replaced {len(replaced)} earlier schedule(s)" if replaced else "new schedule"
    print(
        f"recurring run {rid} ({args.schedule_name}) on '{args.cron}' (the scheduler's time zone, UTC by "
        f"default), max 1 concurrent, no catch-up; {what}"
    )
    return 0
