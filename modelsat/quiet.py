"""Keep the libraries' chatter off stderr in the command-line tools, so that an error is the one line they print.

transformers draws a "Loading weights" bar and logs warnings on every model load, and its deprecated
`is_gradient_checkpointing` (read by peft) warns with a FutureWarning; none of it is the user's to act on. modelsat's
own progress bars (`tqdm.auto`, long work such as encoding or routing many instructions) are not touched.
"""
from __future__ import annotations

import os
import sys
import warnings


def quiet_libraries() -> None:
    """Silence transformers' progress bars and its logging below errors, and filter the `is_gradient_checkpointing`
    FutureWarning. Cheap: before transformers is imported it only sets the environment it reads at import
    (`HF_HUB_DISABLE_PROGRESS_BARS`, `TRANSFORMERS_VERBOSITY`; a value the user set wins); after, it calls its
    switches."""
    warnings.filterwarnings("ignore", message=r".*is_gradient_checkpointing.*", category=FutureWarning)
    if "transformers" in sys.modules:
        from transformers.utils import logging

        logging.set_verbosity_error()
        logging.disable_progress_bar()
    else:
        os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")   # transformers' bars follow the hub's switch
        os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
