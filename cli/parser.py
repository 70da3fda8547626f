"""The command line's grammar: every subcommand and option, nothing that runs."""

from __future__ import annotations

import argparse


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="trainpipe", description="Train, evaluate and version XGBoost models.")
    sub = parser.add_subparsers(dest="command", required=True)

    train = sub.add_parser("train", help="train a model version from a spec file or options")
    train.add_argument("spec", nargs="?", help="YAML spec file (options below override its fields)")
    train.add_argument("--data", action="append", metavar="URI", help="data file, glob or folder (repeatable)")
    train.add_argument("--target", help="column to predict")
    train.add_argument("--task", choices=["binary", "multiclass", "regression"], help="default: inferred")
    train.add_argument("--name", help="model name (default: from the data file name)")
    train.add_argument("--artifacts", metavar="URI",
                       help="artifact store root (default $TRAINPIPE_ARTIFACTS or ./artifacts)")
    train.add_argument("--trials", type=int, help="Optuna tuning trials")
    train.add_argument("--seed", type=int, help="random seed")
    train.add_argument("--json", action="store_true", help="print one JSON object with the result")
    train.add_argument("--verbose", action="store_true", help="show Prefect's own log lines instead of the progress")

    predict = sub.add_parser("predict", help="score rows with a stored model")
    predict.add_argument("--model", required=True, metavar="NAME[:VERSION]")
    predict.add_argument("--data", required=True, metavar="URI")
    predict.add_argument("--out", required=True, metavar="URI", help=".csv, .parquet or .ndjson")
    predict.add_argument("--artifacts", metavar="URI")
    predict.add_argument("--keep", action="append", metavar="COLUMN",
                         help="input column copied to the output beside the model's id columns (repeatable)")
    predict.add_argument("--json", action="store_true")

    models = sub.add_parser("models", help="list models, show a version, promote or roll back by hand")
    models.add_argument("action", choices=["list", "show", "promote", "rollback"])
    models.add_argument("ref", nargs="?", metavar="NAME[:VERSION]")
    models.add_argument("--artifacts", metavar="URI")
    models.add_argument("--reason", help="why (promote, rollback): recorded in the audit log with who")
    models.add_argument("--alias", help="promote: move this alias instead of champion")
    models.add_argument("--json", action="store_true")

    audit = sub.add_parser("audit", help="verify or print a model's audit log")
    audit.add_argument("action", choices=["verify", "log", "head"],
                       help="head: print the log's anchor (SEQ:SHA256) to keep outside the artifact store")
    audit.add_argument("name", metavar="NAME")
    audit.add_argument("--artifacts", metavar="URI")
    audit.add_argument("--head", metavar="SEQ:SHA256", dest="anchor",
                       help="verify: also check the log against an anchor printed earlier by `audit head`")
    audit.add_argument("--json", action="store_true")

    reproduce = sub.add_parser("reproduce", help="re-train a version from its manifest and compare the model")
    reproduce.add_argument("ref", metavar="NAME:VERSION")
    reproduce.add_argument("--artifacts", metavar="URI")
    reproduce.add_argument("--tolerance", type=float, default=1e-6,
                           help="largest raw-score difference accepted when the model files differ (default 1e-6)")
    reproduce.add_argument("--metric-tolerance", type=float, default=0.01,
                           help="largest holdout-metric difference accepted for a model trained on a Dask cluster "
                                "and retrained on other workers or partitions (default 0.01)")
    reproduce.add_argument("--json", action="store_true")

    infra = sub.add_parser("infra", help="set up the work pools, queues and GPU concurrency limit on a Prefect server")
    infra.add_argument("action", choices=["setup"])
    infra.add_argument("--gpu-slots", type=int, default=1, help="GPU training runs at once (default 1)")
    infra.add_argument("--dask-address", help="Dask scheduler for the dask pool (TRAINPIPE_DASK_ADDRESS), e.g. "
                       "tcp://10.0.0.5:8786")
    infra.add_argument("--data-roots", help="data-root allowlist for the dask pool's runs (TRAINPIPE_DATA_ROOTS)")
    infra.add_argument("--json", action="store_true")

    notify = sub.add_parser("notify", help="emit the trainpipe.data.arrived event for new data at URI")
    notify.add_argument("uri", metavar="URI", help="data file, glob, folder or s3:// prefix")
    notify.add_argument("--dataset", help="dataset name in the event (default: from the URI)")
    notify.add_argument("--model", help="skip the event when a version of this model holds the same data")
    notify.add_argument("--artifacts", metavar="URI")
    notify.add_argument("--json", action="store_true")
    return parser
