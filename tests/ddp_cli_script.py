"""Run the ``lightning-calib`` command line given after the script name, as a user would.

Usage: DDP_OUT=metrics.json python tests/ddp_cli_script.py validate --config ... \
    --trainer.devices=2 --trainer.strategy=ddp

Run as a script (not inside pytest): the ``ddp`` strategy re-launches this command line for
rank 1. Rank 0 writes the final ``callback_metrics`` (and the world size) to ``$DDP_OUT``.
"""

import json
import os
import sys
import warnings
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
warnings.filterwarnings("ignore")

from lightning_calib.cli import main  # noqa: E402

if __name__ == "__main__":
    cli = main()
    if cli.trainer.global_rank == 0:
        metrics = {k: float(v) for k, v in cli.trainer.callback_metrics.items()}
        metrics["world_size"] = cli.trainer.world_size
        Path(os.environ["DDP_OUT"]).write_text(json.dumps(metrics))
