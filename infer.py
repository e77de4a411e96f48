"""Rank the zoo of a trained router (the same as `modelsat rank`; the code is `modelsat/infer.py`).

    python infer.py --checkpoint checkpoints/modelsat-smollm2-mmlupro --instruction "What is 2+2?\nA. 3\nB. 4"
"""
import sys

from modelsat.infer import main

if __name__ == "__main__":
    sys.exit(main())
