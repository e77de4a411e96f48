"""Train a modelsat router (the same as `modelsat train`; the code is `modelsat/train.py`).

    accelerate launch --config_file configs/accelerate/cpu.yaml train.py --config configs/default.yaml [key.sub=value ...]
    python train.py --config configs/tiny.yaml train.max_steps=20          # single process works too
"""
import sys

from modelsat.train import cli

if __name__ == "__main__":
    sys.exit(cli())
