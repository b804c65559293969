"""Which ONNX exporter exports more model types correctly: torch.onnx dynamo, TorchScript, or transformers'.

For each model type, export tiny:<type> with each exporter and validate at two shapes against PyTorch.
Prints a table and the count per exporter. Usage:

    .venv/bin/python benchmarks/compare_exporters.py [--types bert,vit,...] [--exporters dynamo,transformers]
"""

from __future__ import annotations

import argparse
import logging
import tempfile
import time
import warnings

DEFAULT_TYPES = "bert,roberta,distilbert,albert,electra,deberta-v2,xlm-roberta,mpnet,vit,resnet,convnext"


def main() -> None:
    """Run the comparison and print one row per model type."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--types", default=DEFAULT_TYPES)
    parser.add_argument("--exporters", default="dynamo,torchscript,transformers")
    args = parser.parse_args()
    warnings.filterwarnings("ignore")
    logging.disable(logging.WARNING)
    from tracefuse import api
    from tracefuse.errors import TracefuseError

    exporters = args.exporters.split(",")
    passed = dict.fromkeys(exporters, 0)
    print(f"{'model type':<16}" + "".join(f"{e:<34}" for e in exporters))
    for model_type in args.types.split(","):
        row = f"{model_type:<16}"
        for exporter in exporters:
            start = time.perf_counter()
            with tempfile.TemporaryDirectory() as tmp:
                try:
                    report = api.export(f"tiny:{model_type}", f"{tmp}/a", exporter=exporter).report
                    ok = bool(report and report["passed"])
                    cell = "validated" if ok else "mismatch"
                except TracefuseError as exc:
                    lines = str(exc).splitlines()
                    ok, cell = False, "failed: " + lines[-2 if len(lines) > 1 else 0][:18]
            passed[exporter] += ok
            row += f"{cell} ({time.perf_counter() - start:4.1f}s)".ljust(34)
        print(row, flush=True)
    total = len(args.types.split(","))
    print("validated at two shapes: " + ", ".join(f"{e} {passed[e]}/{total}" for e in exporters))


if __name__ == "__main__":
    main()
