"""Converters from the public routing-data formats to a `RoutingTable`.

    table = build_table("mmlu-pro", Path("../shared/data/mmlu_pro"))
    table = build_table("mmlu-pro-raw", Path("zips/"), download=True)   # TIGER-AI-Lab/MMLU-Pro eval_results zips
    table = build_table("routerbench", Path("../shared/data/routerbench"), models=["gpt-4-1106-preview", "claude-v2"])

Sources: `mmlu-pro` (compact parquet), `mmlu-pro-raw` (published `model_outputs_<MODEL>_5shots.zip`),
`routerdc` (RouterDC JSON), `routerbench` (RouterBench CSV), `leaderboard` (Open LLM Leaderboard
parquet), `table` (a folder as `RoutingTable.save` writes it, the same in CSV/JSONL, or one long file of text,
model, score rows), `demo` (a small made-up table, `modelsat/data/demo.py`, needing no input).
Every error names the file, the 0-based row and the column.

Why one module: each converter is 30-60 lines and they share the checks.
"""
from __future__ import annotations

import ast
import json
import re
import urllib.error
import urllib.request
import zipfile
from pathlib import Path
from typing import Callable, Literal, Sequence, get_args

import numpy as np
import pandas as pd
from tqdm import tqdm

from modelsat.data.table import (RoutingTable, TableError, check_numbers, check_questions, check_results,
                                 check_strings, check_unique, fail, require_columns)
from modelsat.io_utils import atomic_write_bytes

Source = Literal["mmlu-pro", "mmlu-pro-raw", "routerdc", "routerbench", "leaderboard", "table", "demo"]
SOURCES: tuple[str, ...] = get_args(Source)
LETTERS = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"
MMLU_PRO_HOME = "https://github.com/TIGER-AI-Lab/MMLU-Pro/tree/main/eval_results"
MMLU_PRO_URL = "https://raw.githubusercontent.com/TIGER-AI-Lab/MMLU-Pro/main/eval_results/model_outputs_{model}_5shots.zip"
MMLU_PRO_MODELS = (
    "Llama-2-7b-hf", "Meta-Llama-3-8B", "Meta-Llama-3_1-8B", "Meta-Llama-3_1-8B-Instruct", "Llama-2-70b-hf",
    "Meta-Llama-3-70B", "Meta-Llama-3_1-70B", "Meta-Llama-3_1-70B-Instruct", "Mistral-7B-v0.1", "Mistral-7B-v0.2-hf",
    "Mistral-7B-Instruct-v0.1", "Mistral-7B-Instruct-v0.2", "Mixtral-8x7B-v0.1", "Mixtral-8x7B-Instruct-v0.1",
    "Qwen1.5-7B-Chat", "Qwen1.5-72B-Chat", "Qwen1.5-110B", "Yi-6B", "Yi-6b-Chat", "Yi-34B", "gemma-7b",
    "c4ai-command-r-v01", "DeepSeek-Coder-V2", "gemini-1.5-pro-002",
)
HOMES = {  # where each source is published, for error messages
    "mmlu-pro": "the compact parquet folder (questions.parquet, results.parquet, models.json)",
    "mmlu-pro-raw": MMLU_PRO_HOME,
    "routerdc": "https://github.com/shuhao02/RouterDC (datasets/split2_model7/*.json)",
    "routerbench": "https://github.com/shuhao02/RouterDC (datasets/routerbench_zs/*.csv)",
    "leaderboard": "a folder with items.parquet, results.parquet, models.parquet (metabench item-level results)",
    "table": "a folder with questions, results and optional models files (.parquet, .csv or .jsonl), or one file of "
             "text, model, score rows (docs/own-data.md)",
    "demo": "nothing: the demo table is made up in code (modelsat/data/demo.py)",
}
_RAW_NAME = re.compile(r"model_outputs_(.+)_5shots\.zip")


class DownloadError(TableError):
    """A source could not be fetched (offline, HTTP error, not a zip)."""


def lettered(question: str, options: Sequence[str] | None) -> str:
    """The question followed by its options as `A. ...` lines (the question alone without options)."""
    options = [] if options is None else list(options)
    if len(options) > len(LETTERS):
        raise ValueError(f"{len(options)} options; at most {len(LETTERS)} can be lettered")
    return "\n".join([question] + [f"{LETTERS[i]}. {o}" for i, o in enumerate(options)])


def _read_parquet(file: Path, columns: Sequence[str]) -> pd.DataFrame:
    if not file.is_file():
        raise fail(file, None, None, "not found")
    try:
        df = pd.read_parquet(file)
    except Exception as e:  # noqa: BLE001 - report any reader failure against the file
        raise fail(file, None, None, f"cannot be read as parquet: {e}") from e
    require_columns(df, columns, file)
    return df


def _params(file: Path) -> pd.DataFrame:
    """models.json of the MMLU-Pro folder: {model: {"params_b": x}} -> frame (model, params_b)."""
    try:
        info = json.loads(file.read_text())
        rows = [(k, v.get("params_b")) for k, v in info.items() if not k.startswith("_")]
        return pd.DataFrame({"model": [k for k, _ in rows], "params_b": [np.nan if p is None else float(p) for _, p in rows]})
    except (ValueError, AttributeError, TypeError) as e:
        raise fail(file, None, None, f"expected {{model: {{\"params_b\": number | null}}}}: {e}") from e


def _mmlu_pro_questions(q: pd.DataFrame, file: str | Path) -> pd.DataFrame:
    """MMLU-Pro records (question_id, question, options, answer, category, src) -> questions frame, row for row."""
    names = {"text": "question", "source": "src"}
    out = pd.DataFrame({"question_id": "mmlu-pro/" + q["question_id"].astype(str), "text": q["question"],
                        "benchmark": "mmlu-pro", "category": q["category"], "task": "", "source": q["src"],
                        "answer": q["answer"].where(q["answer"].notna(), "")})
    check_questions(out, file, names)  # question text checked before the options are appended
    for i, opts in enumerate(q["options"]):
        if opts is None or isinstance(opts, str) or len(opts) == 0 or len(opts) > len(LETTERS):
            raise fail(file, i, "options", f"expected a list of 1 to {len(LETTERS)} strings, got {opts!r}")
    out["text"] = [lettered(t, o) for t, o in zip(out["text"], q["options"])]
    mmlu = out["source"].str.startswith("ori_mmlu-")
    out["task"] = out["source"].str.slice(len("ori_mmlu-")).where(mmlu, "")
    return out


def _mmlu_pro(folder: Path) -> RoutingTable:
    qf, rf = folder / "questions.parquet", folder / "results.parquet"
    q = _read_parquet(qf, ["question_id", "question", "options", "answer", "category", "src"])
    r = _read_parquet(rf, ["model", "question_id", "pred"])
    questions = _mmlu_pro_questions(q, qf)
    qid = "mmlu-pro/" + r["question_id"].astype(str)
    if "correct" in r.columns:  # the authors' grading: pred == the answer in that model's own record
        check_numbers(r, "correct", rf, 0.0, 1.0)
        score = r["correct"].astype(np.float64)
    else:
        answer = qid.map(dict(zip(questions["question_id"], questions["answer"])))
        score = (r["pred"].notna() & (r["pred"] == answer)).astype(np.float64)
    results = pd.DataFrame({"model": r["model"], "question_id": qid, "score": score})
    check_results(results, rf, questions["question_id"], qf.name, {"score": "correct"})
    models = _params(folder / "models.json") if (folder / "models.json").is_file() else None
    return RoutingTable(questions, results, models)


def download_mmlu_pro(folder: Path, models: Sequence[str] | None = None, timeout: float = 10.0) -> list[Path]:
    """Fetch the published `model_outputs_<MODEL>_5shots.zip` files into `folder` (existing ones are kept)."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for name in tqdm(list(models or MMLU_PRO_MODELS), desc="download MMLU-Pro outputs", unit="model"):
        dest, url = folder / f"model_outputs_{name}_5shots.zip", MMLU_PRO_URL.format(model=name)
        if not dest.is_file():
            try:
                with urllib.request.urlopen(url, timeout=timeout) as resp:
                    data = resp.read()
            except urllib.error.HTTPError as e:
                raise DownloadError(f"{url}: HTTP {e.code}; is {name!r} one of the models in {MMLU_PRO_HOME}?") from e
            except (urllib.error.URLError, OSError) as e:
                raise DownloadError(f"cannot download {url}: the network is unreachable ({getattr(e, 'reason', e)}). "
                                    f"Download the zips by hand from {MMLU_PRO_HOME} into {folder} and run again "
                                    "without download (they are read from the folder).") from e
            if not data.startswith(b"PK"):
                raise DownloadError(f"{url}: the reply is not a zip file ({len(data)} bytes)")
            atomic_write_bytes(dest, data)
        paths.append(dest)
    return paths


def _mmlu_pro_raw(path: Path, download: bool = False, models: Sequence[str] | None = None) -> RoutingTable:
    files = download_mmlu_pro(path, models) if download else (
        [path] if path.is_file() else sorted(path.glob("model_outputs_*_5shots.zip")))
    if not files:
        raise fail(path, None, None, f"no model_outputs_<MODEL>_5shots.zip here; get them from {MMLU_PRO_HOME} "
                   "or pass download=True (--download)")
    questions, results = [], []
    for f in tqdm(files, desc="read MMLU-Pro outputs", unit="model", disable=len(files) < 4):
        if not (match := _RAW_NAME.fullmatch(f.name)):
            raise fail(f, None, None, "the file name must be model_outputs_<MODEL>_5shots.zip")
        try:
            with zipfile.ZipFile(f) as z:
                members = [n for n in z.namelist() if n.endswith(".json") and not n.startswith("__MACOSX")]
                data = z.read(members[0]) if len(members) == 1 else b""
        except zipfile.BadZipFile as e:
            raise fail(f, None, None, f"not a zip file: {e}") from e
        if len(members) != 1:
            raise fail(f, None, None, f"expected one .json file inside, found {members}")
        label = f"{f}:{members[0]}"
        try:
            records = json.loads(data)
        except ValueError as e:
            raise fail(label, None, None, f"not valid JSON: {e}") from e
        if not isinstance(records, list) or not all(isinstance(r, dict) for r in records):
            raise fail(label, None, None, "expected a JSON list of records")
        df = pd.DataFrame.from_records(records)
        require_columns(df, ["question_id", "question", "options", "answer", "category", "src"], label)
        q = _mmlu_pro_questions(df, label)
        pred = df["pred"] if "pred" in df.columns else pd.Series([None] * len(df))
        score = (pred.notna() & (pred == df["answer"])).astype(np.float64)
        res = pd.DataFrame({"model": match.group(1), "question_id": q["question_id"], "score": score})
        check_unique(res, ["model", "question_id"], label, {"question_id": "question_id"})
        questions.append(q)
        results.append(res)
    # every model file repeats the questions: the first file's copy of each question is kept
    q = pd.concat(questions, ignore_index=True).drop_duplicates("question_id", keep="first")
    params = path / "models.json" if path.is_dir() else path.parent / "models.json"
    return RoutingTable(q, pd.concat(results, ignore_index=True), _params(params) if params.is_file() else None)


def _benchmark(stem: str) -> str:
    return re.sub(r"[_-](train|test)$", "", stem)


def _routerdc(path: Path) -> RoutingTable:
    files = [path] if path.is_file() else sorted(path.glob("*.json"))
    if not files:
        raise fail(path, None, None, f"no RouterDC *.json files here; get them from {HOMES['routerdc']}")
    questions, results = [], []
    for f in tqdm(files, desc="read RouterDC", unit="file", disable=len(files) < 4):
        try:
            records = json.loads(f.read_text())
        except ValueError as e:
            raise fail(f, None, None, f"not valid JSON: {e}") from e
        if not isinstance(records, list):
            raise fail(f, None, None, 'expected a JSON list of {"question": str, "scores": {model: score}}')
        for i, rec in enumerate(records):
            if not isinstance(rec, dict) or not isinstance(rec.get("question"), str) or not rec["question"].strip():
                raise fail(f, i, "question", "missing or empty question text")
            if not isinstance(rec.get("scores"), dict):
                raise fail(f, i, "scores", "expected an object {model: score}")
            qid = f"routerdc/{f.stem}/{i}"
            questions.append((qid, rec["question"], _benchmark(f.stem), f.stem))
            for model, s in rec["scores"].items():
                if s is None:
                    continue  # not evaluated
                if not isinstance(s, (int, float)) or not 0.0 <= s <= 1.0:
                    raise fail(f, i, f"scores.{model}", f"{s!r} is not a number in [0, 1]")
                results.append((model, qid, float(s)))
    q = pd.DataFrame(questions, columns=["question_id", "text", "benchmark", "source"])
    q = q.assign(category=q["benchmark"], task="")
    return RoutingTable(q, pd.DataFrame(results, columns=["model", "question_id", "score"]))


def _unwrap(prompt: str) -> str:
    """RouterBench stores prompts as a Python list of strings (the same one repeated): return the text."""
    if prompt.startswith("["):
        try:
            value = ast.literal_eval(prompt)
        except (ValueError, SyntaxError, MemoryError, RecursionError):
            return prompt
        if isinstance(value, list) and value and all(isinstance(v, str) for v in value):
            return value[0] if len(set(value)) == 1 else "\n\n".join(value)
    return prompt


def _routerbench(path: Path) -> RoutingTable:
    files = [path] if path.is_file() else sorted(path.glob("*.csv"))
    if not files:
        raise fail(path, None, None, f"no RouterBench *.csv files here; get them from {HOMES['routerbench']}")
    frames = []
    for f in files:
        df = pd.read_csv(f, dtype={"sample_id": str, "prompt": str, "eval_name": str})
        require_columns(df, ["sample_id", "prompt", "eval_name"], f)
        for c in ("sample_id", "prompt", "eval_name"):
            df[c] = df[c].fillna("")  # an empty cell reads as NaN: report it as empty
            check_strings(df, c, f)
        models = [c for c in df.columns if "|" not in c and c not in ("sample_id", "prompt", "eval_name",
                                                                     "oracle_model_to_route_to")]
        for m in models:
            check_numbers(df, m, f, 0.0, 1.0, allow_nan=True)  # NaN: the model was not run on that row
            if f"{m}|total_cost" in df.columns:
                check_numbers(df, f"{m}|total_cost", f, 0.0, None, allow_nan=True)
        text = df["prompt"].map(_unwrap)
        check_strings(pd.DataFrame({"prompt": text}), "prompt", f)
        for m in models:
            cost = df[f"{m}|total_cost"] if f"{m}|total_cost" in df.columns else np.nan
            frames.append(pd.DataFrame({
                "sample_id": df["sample_id"], "text": text, "eval_name": df["eval_name"], "source": f.stem,
                "model": m, "score": pd.to_numeric(df[m], errors="coerce"), "cost": pd.to_numeric(cost, errors="coerce"),
                "file": str(f), "row": np.arange(len(df))}))
    long = pd.concat(frames, ignore_index=True)
    # A sample_id on several rows (RouterBench splits a few ARC items across rows) is one question:
    # allowed when the prompts agree and no model has two results.
    first = long.drop_duplicates("sample_id")
    clash = long["text"].to_numpy() != long["sample_id"].map(dict(zip(first["sample_id"], first["text"]))).to_numpy()
    if (i := np.flatnonzero(clash)).size:
        row, head = long.iloc[i[0]], first[first["sample_id"] == long["sample_id"].iloc[i[0]]].iloc[0]
        raise fail(row["file"], row["row"], "prompt", f"sample_id {row['sample_id']!r} is also at {head['file']} "
                   f"row {head['row']} with a different prompt")
    long = long[long["score"].notna()].reset_index(drop=True)
    dup = long.duplicated(["model", "sample_id"], keep="first").to_numpy()
    if (i := np.flatnonzero(dup)).size:
        row = long.iloc[i[0]]
        raise fail(row["file"], row["row"], row["model"], f"a second result for sample_id {row['sample_id']!r}")
    questions = pd.DataFrame({"question_id": "routerbench/" + first["sample_id"], "text": first["text"],
                              "benchmark": first["eval_name"], "category": first["eval_name"], "task": "",
                              "source": first["source"]})
    results = pd.DataFrame({"model": long["model"], "question_id": "routerbench/" + long["sample_id"],
                            "score": long["score"].astype(np.float64), "cost": long["cost"].astype(np.float64)})
    mean_cost = results.groupby("model")["cost"].mean()
    models = pd.DataFrame({"model": mean_cost.index, "cost": mean_cost.to_numpy(),
                           "cost_unit": np.where(mean_cost.notna(), "USD/query", "")})
    return RoutingTable(questions, results, models)


def _leaderboard(folder: Path) -> RoutingTable:
    itf, rf, mf = folder / "items.parquet", folder / "results.parquet", folder / "models.parquet"
    items = _read_parquet(itf, ["item_id", "benchmark", "question", "choices", "answer_index"])
    subject = items["subject"] if "subject" in items.columns else pd.Series([""] * len(items))
    idx = items["answer_index"]
    questions = pd.DataFrame({
        "question_id": "leaderboard/" + items["item_id"], "text": items["question"], "benchmark": items["benchmark"],
        "category": items["benchmark"], "task": subject.where(subject.notna() & (items["benchmark"] == "mmlu"), ""),
        "source": "leaderboard",
        "answer": [LETTERS[int(i)] if pd.notna(i) and 0 <= int(i) < len(LETTERS) else "" for i in idx]})
    check_questions(questions, itf, {"question_id": "item_id", "text": "question"})
    questions["text"] = [lettered(t, c) for t, c in zip(questions["text"], items["choices"])]
    r = _read_parquet(rf, ["model", "item_id", "correct"])
    results = pd.DataFrame({"model": r["model"], "question_id": "leaderboard/" + r["item_id"],
                            "score": r["correct"].astype(np.float64)})
    check_results(results, rf, questions["question_id"], itf.name, {"question_id": "item_id", "score": "correct"})
    models = _read_parquet(mf, ["model", "params_b"])[["model", "params_b"]] if mf.is_file() else None
    return RoutingTable(questions, results, models)


def build_table(source: Source, input: Path | str | None, download: bool = False,
                models: Sequence[str] | None = None) -> RoutingTable:
    """Convert `input` (a folder or file in the `source` format) to a validated `RoutingTable`.

    `download` fetches the published files into `input` (mmlu-pro-raw only); `models` keeps only those models.
    """
    if source not in SOURCES:
        raise TableError(f"unknown source {source!r}; choose one of {', '.join(SOURCES)}")
    if download and source != "mmlu-pro-raw":
        raise TableError(f"download is available for mmlu-pro-raw only; get {source} from {HOMES[source]}")
    if source == "demo":
        from modelsat.data.demo import demo_table   # (made up in code: no input, nothing downloaded)

        table = demo_table()
        return table.subset(models=models) if models is not None else table
    if input is None:
        raise TableError(f"{source}: pass the input folder ({HOMES[source]})")
    path = Path(input)
    if not path.exists() and not download:
        raise fail(path, None, None, f"not found; {source} expects {HOMES[source]}")
    converters: dict[str, Callable[[Path], RoutingTable]] = {
        "mmlu-pro": _mmlu_pro, "mmlu-pro-raw": lambda p: _mmlu_pro_raw(p, download, models), "routerdc": _routerdc,
        "routerbench": _routerbench, "leaderboard": _leaderboard, "table": RoutingTable.load}
    table = converters[source](path)
    if models is not None:
        unknown = sorted(set(models) - set(table.model_names))
        if unknown:
            raise TableError(f"{path}: unknown model(s) {unknown}; {source} has {len(table.model_names)} models, "
                             f"e.g. {table.model_names[:5]}")
        table = table.subset(models=models)
    table.validate(origin=str(path))
    return table
