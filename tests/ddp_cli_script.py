"""Run the ``lightning-calib`` command line given after the script name, as a user would.

Usage: DDP_OUT=out.json python tests/ddp_cli_script.py validate --config ... \
    --trainer.devices=2 --trainer.strategy=ddp

Run as a script (not inside pytest): the ``ddp`` strategy re-launches this command line for
rank 1. Rank 0 writes the final ``callback_metrics`` (and the world size) to ``$DDP_OUT``;
every rank writes the config it parsed (and its rank) to ``$DDP_OUT.rank<r>``, so a test can
check that the re-launched ranks composed the same config.
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
    out = Path(os.environ["DDP_OUT"])
    rank = cli.trainer.global_rank
    config = cli.config[cli.subcommand] if cli.subcommand else cli.config
    parsed = json.dumps(config.clone().as_dict(), default=str, sort_keys=True)
    Path(f"{out}.rank{rank}").write_text(
        json.dumps({"rank": rank, "config": parsed, "argv": sys.argv[1:]})
    )
    if rank == 0:
        metrics = {k: float(v) for k, v in cli.trainer.callback_metrics.items()}
        metrics["world_size"] = cli.trainer.world_size
        out.write_text(json.dumps(metrics))
