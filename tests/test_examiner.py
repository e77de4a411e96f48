"""The aptitude test over an OpenAI-compatible chat endpoint (modelsat/examiner.py, `modelsat aptitude run
--endpoint`), against an in-process fake server on 127.0.0.1 that answers each question as scripted: answer
styles, garbage, 500s, 429s, timeouts, malformed bodies. Also: every committed aptitude test carries its answers."""
from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path

import pandas as pd
import pytest

pytest.importorskip("httpx", reason="httpx (the [serve] extra) runs the endpoint client")
pytest.importorskip("fastapi", reason="fastapi (the [serve] extra) runs the fake endpoint")
pytest.importorskip("uvicorn", reason="uvicorn (the [serve] extra) runs the fake endpoint")
import uvicorn  # noqa: E402
from fastapi import FastAPI, Request  # noqa: E402  (at module level: the handler's annotation must resolve)
from fastapi.responses import JSONResponse, PlainTextResponse  # noqa: E402

from modelsat.aptitude import Aptitude, AptitudeError, AptitudeTask, graded_letters  # noqa: E402
from modelsat.examiner import ExaminerError, answer_log_path, examine, parse_letter, spread_order  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
LETTERS = "ABCD"


def make_aptitude(num_tasks: int = 3, per_task: int = 4, answers: bool = True) -> Aptitude:
    """`num_tasks` × `per_task` questions "Question i" with options A-D; the answer of question i is LETTERS[i % 4]."""
    tasks, texts, keys = [], {}, {}
    for t in range(num_tasks):
        ids = []
        for s in range(per_task):
            i = t * per_task + s
            q = f"q{i:03d}"
            texts[q] = f"Question {i}: which is right?\nA. alpha {i}\nB. beta {i}\nC. gamma {i}\nD. delta {i}"
            keys[q] = LETTERS[i % 4]
            ids.append(q)
        tasks.append(AptitudeTask(f"task{t}", f"task {t}", ids))
    return Aptitude(tasks, texts, keys if answers else {}, source={"benchmarks": ["fake"]})


# ---------------------------------------------------------------- the fake endpoint
class FakeEndpoint:
    """An OpenAI-compatible /v1/chat/completions on 127.0.0.1 (uvicorn in a thread) for the test `load`ed: question i
    is the i-th of its question ids. `plan[i]` scripts it: a list of steps used one per request (the last one
    repeats): a reply text, or "500", "429", "400", "sleep" (longer than the client's timeout), "malformed" (a 200
    that is not a chat completion). Default: the right letter. It counts requests per question and the most
    requests in flight at once."""

    def __init__(self) -> None:
        self.plan: dict[int, list[str]] = {}
        self.index: dict[str, int] = {}       # question text -> i
        self.answers: list[str] = []
        self.requests: Counter[int] = Counter()
        self.in_flight = self.max_in_flight = 0
        self.delay = 0.0
        self.key: str | None = None
        self.seen_auth: list[str | None] = []
        app = FastAPI()

        @app.post("/v1/chat/completions")
        async def chat(request: Request):
            body = await request.json()
            self.seen_auth.append(request.headers.get("authorization"))
            if self.key is not None and request.headers.get("authorization") != f"Bearer {self.key}":
                return JSONResponse({"error": {"message": "invalid api key"}}, status_code=401)
            if body.get("model") != "fake-llm":
                return JSONResponse({"error": {"message": f"model {body.get('model')} not found"}}, status_code=404)
            i = self.index[body["messages"][-1]["content"].rsplit("\n\nAnswer with the letter", 1)[0]]
            self.requests[i] += 1
            steps = self.plan.get(i, [self.answers[i]])
            step = steps[min(self.requests[i], len(steps)) - 1]
            self.in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self.in_flight)
            try:
                await asyncio.sleep(self.delay)
                if step == "sleep":
                    await asyncio.sleep(2.0)
                if step in ("500", "400"):
                    return JSONResponse({"error": "scripted"}, status_code=int(step))
                if step == "429":
                    return JSONResponse({"error": "slow down"}, status_code=429, headers={"retry-after": "0"})
                if step == "malformed":
                    return PlainTextResponse("not json {")
                return {"id": "x", "object": "chat.completion", "model": "fake-llm",
                        "choices": [{"index": 0, "message": {"role": "assistant", "content": step},
                                     "finish_reason": "stop"}],
                        "usage": {"prompt_tokens": 10, "completion_tokens": 2, "total_tokens": 12}}
            finally:
                self.in_flight -= 1

        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.bind(("127.0.0.1", 0))
        self.port = sock.getsockname()[1]
        self.server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="off"))
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [sock]}, daemon=True)
        self.thread.start()
        deadline = time.monotonic() + 20
        while not self.server.started:
            if time.monotonic() > deadline:
                raise RuntimeError("the fake endpoint did not start")
            time.sleep(0.02)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def load(self, apt: Aptitude) -> None:
        """Serve the questions of `apt`."""
        self.index = {apt.texts[q]: i for i, q in enumerate(apt.question_ids)}
        self.answers = [apt.answers[q] for q in apt.question_ids]

    def reset(self) -> None:
        self.plan, self.requests, self.in_flight, self.max_in_flight = {}, Counter(), 0, 0
        self.delay, self.key, self.seen_auth = 0.0, None, []

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)


@pytest.fixture(scope="module")
def endpoint():
    fake = FakeEndpoint()
    yield fake
    fake.stop()


@pytest.fixture
def fake(endpoint):
    endpoint.reset()
    return endpoint


def run(fake: FakeEndpoint, apt: Aptitude, out: Path, **kw):
    fake.load(apt)
    kw = {"timeout": 0.5, "backoff": 0.01, "progress": False, **kw}
    return examine(fake.url, "fake-llm", apt, out, **kw)


# ---------------------------------------------------------------- parsing
@pytest.mark.parametrize("reply, want", [
    ("B", "B"), ("(B)", "B"), ("B.", "B"), ("b", "B"), ("The answer is B.", "B"), ("**B**", "B"), ("Answer: b", "B"),
    ("B. Helicase unwinds the DNA double helix.", "B"), ("B) Helicase", "B"), ("Helicase", "B"), ("helicase.", "B"),
    ("The answer is Helicase", "B"), ("The correct answer is (C) Primase", "C"), ("The answer is: (D)", "D"),
    ("**Answer:** C\n\nExplanation: primase lays down primers", "C"), ("I think it's C", "C"), ("I'd go with D", "D"),
    ("A good answer is B", "B"), ("A is correct", "A"), ("Answer: I think B", "B"), ("Final answer: D", "D"),
    ("<think>A or C? C.</think>\nC", "C"), ("[C]", "C"),
    ("I don't know", None), ("", None), (None, None), ("E", None), ("Both A and B", None),
    ("Option B is right because A is wrong", None), ("The answer is a good question", None),
])
def test_parse_letter_reads_the_usual_answer_styles(reply, want) -> None:
    options = {"A": "DNA ligase", "B": "Helicase", "C": "Primase", "D": "Topoisomerase"}
    assert parse_letter(reply, options) == want


def test_parse_letter_reads_an_option_text_written_as_is() -> None:
    """Option texts that look like letters, markup or other options once normalised (seen in MMLU-Pro)."""
    options = {"A": "(G) Stayed the same", "B": "E_\\Elzpbgam^2/ 4Mc^2", "C": "$-45$ $\\mu \\mathrm{C}$",
               "D": "$+45$ $\\mu \\mathrm{C}$", "E": "(A) Increased", "F": "AaBb", "G": "aabb"}
    for letter, text in options.items():
        assert parse_letter(text, options) == letter, text


def test_parse_letter_tells_the_options_I_and_A_from_the_words() -> None:
    options = {c: f"option {c.lower()} text" for c in "ABCDEFGHIJ"}
    assert parse_letter("I", options) == "I" and parse_letter("I. option i text", options) == "I"
    assert parse_letter("The answer is I", options) == "I"
    assert parse_letter("I believe the answer is J", options) == "J"
    assert parse_letter("I think A", options) == "A"


# ---------------------------------------------------------------- a run
def test_examine_parses_retries_and_summarises(fake, tmp_path: Path) -> None:
    """Styles, garbage, 500s, a 429, a timeout and a malformed body: every question ends answered, the garbage one
    unparsed and counted wrong; the retried ones asked again only until answered; tokens summed from usage."""
    apt = make_aptitude()                             # 12 questions; answer of i is LETTERS[i % 4]
    fake.plan = {0: ["A"], 1: ["(B)"], 2: ["The answer is C."], 3: ["**D**"], 4: ["Answer: a"],
                 5: ["B. beta 5, because..."], 6: ["gamma 6"], 7: ["I cannot tell."],
                 8: ["500", "500", "A"], 9: ["429", "B"], 10: ["sleep", "C"], 11: ["malformed", "D"]}
    out = tmp_path / "fake.parquet"
    summary = run(fake, apt, out, retries=3)
    assert summary.answered == summary.asked == 12 and not summary.failed
    assert summary.unparsed == ["q007"]
    assert summary.correct == 11 and summary.accuracy == pytest.approx(11 / 12)
    assert [fake.requests[i] for i in range(12)] == [1] * 8 + [3, 2, 2, 2]
    assert (summary.prompt_tokens, summary.completion_tokens) == (120, 24)
    df = pd.read_parquet(out)
    assert df["question_id"].tolist() == apt.question_ids
    assert df["score"].tolist() == [1.0] * 7 + [0.0] + [1.0] * 4
    log = [json.loads(line) for line in answer_log_path(out).read_text().splitlines()]
    assert log[0]["upstream_model"] == "fake-llm" and log[0]["fingerprint"] == apt.fingerprint
    assert {r["question_id"]: r["letter"] for r in log[1:]}["q006"] == "C"
    text = "\n".join(summary.lines(out))
    assert "12 of 12 aptitude questions answered, accuracy 0.917" in text and "1 unparsed" in text
    assert "120 prompt + 24 completion" in text and "covers" not in text


def test_concurrency_is_bounded(fake, tmp_path: Path) -> None:
    fake.delay = 0.1
    summary = run(fake, make_aptitude(4, 4), tmp_path / "c.parquet", concurrency=3)
    assert summary.answered == 16
    assert fake.max_in_flight == 3                    # concurrent, and never more than asked for


def test_failures_are_reported_not_cached_and_asked_again(fake, tmp_path: Path) -> None:
    """A question refused with a 400 is not retried; one that keeps failing stops after the retries; neither is
    written, so the next run asks them (and only them) again."""
    apt = make_aptitude()
    fake.plan = {2: ["400"], 5: ["500"]}
    out = tmp_path / "f.parquet"
    summary = run(fake, apt, out, retries=2)
    assert set(summary.failed) == {"q002", "q005"} and summary.answered == 10
    assert "HTTP 400" in summary.failed["q002"] and "3 attempts" in summary.failed["q005"]
    assert fake.requests[2] == 1 and fake.requests[5] == 3
    assert len(pd.read_parquet(out)) == 10
    assert any("2 questions got no answer" in line for line in summary.lines(out))
    fake.requests.clear()
    fake.plan = {}
    again = run(fake, apt, out, retries=2)
    assert dict(fake.requests) == {2: 1, 5: 1} and again.asked == 2 and again.answered == 12 and not again.failed


def test_limit_spreads_over_tasks_and_resumes(fake, tmp_path: Path) -> None:
    apt = make_aptitude()
    out = tmp_path / "l.parquet"
    summary = run(fake, apt, out, limit=5)
    assert summary.answered == 5 and sorted(fake.requests) == [0, 1, 4, 5, 8]   # tasks' first questions first
    assert spread_order(apt)[:5] == ["q000", "q004", "q008", "q001", "q005"]
    assert any("covers 5 of the 12 questions" in line for line in summary.lines(out))
    assert len(pd.read_parquet(out)) == 5
    run(fake, apt, out)
    assert set(fake.requests.values()) == {1} and len(fake.requests) == 12        # no question asked twice


def test_a_torn_last_line_is_dropped_and_its_question_asked_again(fake, tmp_path: Path) -> None:
    apt = make_aptitude()
    out = tmp_path / "t.parquet"
    run(fake, apt, out, limit=6)
    log = answer_log_path(out)
    lines = log.read_text().splitlines(keepends=True)
    torn_id = json.loads(lines[-1])["question_id"]
    log.write_text("".join(lines[:-1]) + lines[-1][:25])             # the kill cut the last line
    fake.requests.clear()
    summary = run(fake, apt, out)
    asked = {apt.question_ids[i] for i in fake.requests}
    assert torn_id in asked and len(asked) == 12 - 5 and summary.answered == 12
    assert all(json.loads(line) for line in log.read_text().splitlines())   # every line whole again


def test_killed_midway_resumes_without_asking_an_answered_question(fake, tmp_path: Path) -> None:
    """`modelsat aptitude run --endpoint` killed with SIGKILL while answers arrive: the rerun asks no question
    whose answer was written, and ends with every question answered."""
    apt = make_aptitude(4, 5)                                        # 20 questions
    apt_file = tmp_path / "aptitude.json"
    apt.save(apt_file)
    out = tmp_path / "k.parquet"
    fake.load(apt)
    fake.delay = 0.15
    cmd = [sys.executable, "-m", "modelsat.cli", "aptitude", "run", "--endpoint", fake.url, "--upstream-model",
           "fake-llm", "--aptitude", str(apt_file), "--out", str(out), "--concurrency", "2"]
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    log = answer_log_path(out)
    deadline = time.monotonic() + 60
    while not (log.exists() and len(log.read_text().splitlines()) >= 1 + 6):
        assert proc.poll() is None and time.monotonic() < deadline, "the run ended or stalled before the kill"
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    answered = {json.loads(line)["question_id"] for line in log.read_text().splitlines()[1:] if line.endswith("}")}
    assert 6 <= len(answered) < 20
    before = Counter(fake.requests)
    fake.delay = 0.0
    summary = run(fake, apt, out)
    rerun = Counter({i: n - before[i] for i, n in fake.requests.items() if n - before[i]})
    assert not {apt.question_ids[i] for i in rerun} & answered       # nothing answered is asked again
    assert summary.answered == 20 and max(rerun.values()) == 1
    assert Counter(json.loads(line)["question_id"] for line in log.read_text().splitlines()[1:]).most_common(1)[0][1] == 1


def test_another_runs_log_is_refused(fake, tmp_path: Path) -> None:
    apt = make_aptitude()
    out = tmp_path / "o.parquet"
    run(fake, apt, out, limit=2)
    with pytest.raises(ExaminerError, match="holds answers of 'fake-llm' to aptitude test .* choose another --out"):
        run(fake, make_aptitude(2, 4), out)


def test_wrong_model_url_or_key_stop_the_run(fake, tmp_path: Path, monkeypatch) -> None:
    apt = make_aptitude()
    fake.load(apt)
    with pytest.raises(ExaminerError, match="answered 404 .*--upstream-model"):
        examine(fake.url, "no-such-model", apt, tmp_path / "a.parquet", progress=False, backoff=0.01)
    fake.key = "s3cret"
    monkeypatch.delenv("FAKE_KEY", raising=False)
    with pytest.raises(ExaminerError, match="FAKE_KEY .* is not set"):
        run(fake, apt, tmp_path / "b.parquet", api_key_env="FAKE_KEY")
    monkeypatch.setenv("FAKE_KEY", "wrong")
    with pytest.raises(ExaminerError, match="answered 401 .*API key was refused"):
        run(fake, apt, tmp_path / "c.parquet", api_key_env="FAKE_KEY")
    monkeypatch.setenv("FAKE_KEY", "s3cret")
    summary = run(fake, apt, tmp_path / "d.parquet", api_key_env="FAKE_KEY")
    assert summary.answered == 12 and fake.seen_auth[-1] == "Bearer s3cret"
    assert "s3cret" not in answer_log_path(tmp_path / "d.parquet").read_text()
    with pytest.raises(ExaminerError, match="must be an http"):
        examine("ftp://x/v1", "fake-llm", apt, tmp_path / "e.parquet", progress=False)
    with pytest.raises(ExaminerError, match="--limit must be an integer >= 1"):
        run(fake, apt, tmp_path / "f.parquet", limit=0)


def test_an_endpoint_nothing_answers_at_ends_the_run_at_once(tmp_path: Path) -> None:
    """Connection refused on the first question, before any answer: one error at once, not every question's retries
    (490 questions x 6 attempts took ~18 minutes to end)."""
    import socket

    with socket.socket() as free:
        free.bind(("127.0.0.1", 0))
        port = free.getsockname()[1]                                   # closed again: nothing listens there
    with pytest.raises(ExaminerError, match=rf"nothing answers at http://127.0.0.1:{port}/v1/chat/completions "
                                            r"\(connection error .*check --endpoint"):
        examine(f"http://127.0.0.1:{port}/v1", "m", make_aptitude(), tmp_path / "a.parquet", progress=False,
                retries=1, backoff=0.01)


def test_cli_endpoint_run_feeds_zoo_add(fake, tiny_checkpoint: Path, tmp_path: Path, capsys) -> None:
    """`modelsat aptitude run --endpoint` on a checkpoint's test, then `modelsat zoo add` of its output; with
    --limit the file covers part of the test: refused, or with --missing wrong, accepted up to 5% missing."""
    from modelsat.cli import main

    ckpt = tmp_path / "ckpt"
    shutil.copytree(tiny_checkpoint, ckpt)
    apt = Aptitude.load(ckpt / "aptitude.json")
    fake.load(apt)
    n = len(apt.question_ids)
    out = tmp_path / "api.parquet"
    args = ["aptitude", "run", "--endpoint", fake.url, "--upstream-model", "fake-llm", "--aptitude",
            str(ckpt / "aptitude.json"), "--out", str(out)]
    assert main(args + ["--limit", str(n - 1)]) == 0
    printed = capsys.readouterr().out
    assert f"{n - 1} of {n} aptitude questions answered" in printed and "--missing wrong with at most" in printed
    assert main(["zoo", "add", "--checkpoint", str(ckpt), "--name", "api-llm", "--results", str(out),
                 "--cost", "1", "--cost-unit", "USD/query"]) == 2
    assert "miss" in capsys.readouterr().err
    assert main(["zoo", "add", "--checkpoint", str(ckpt), "--name", "api-llm", "--results", str(out),
                 "--cost", "1", "--cost-unit", "USD/query", "--missing", "wrong"]) == 0
    assert "1 missing answers counted as wrong" in capsys.readouterr().out
    assert main(args) == 0 and sum(fake.requests.values()) == n       # the rest asked, nothing twice
    assert f"{n} of {n} aptitude questions answered" in capsys.readouterr().out
    assert main(["aptitude", "run", "--endpoint", fake.url, "--aptitude", str(ckpt / "aptitude.json"),
                 "--out", str(out)]) == 2
    assert "--endpoint needs --upstream-model" in capsys.readouterr().err
    assert main(args + ["--model", "tiny-llama"]) == 2
    assert "give either --model" in capsys.readouterr().err


def test_cli_says_in_one_line_that_a_test_has_no_answers(tmp_path: Path, capsys) -> None:
    from modelsat.cli import main

    make_aptitude(answers=False).save(tmp_path / "a.json")
    code = main(["aptitude", "run", "--endpoint", "http://127.0.0.1:9/v1", "--upstream-model", "m",
                 "--aptitude", str(tmp_path / "a.json"), "--out", str(tmp_path / "o.parquet")])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and "stores no answers (fake publishes which models were right" in err


# ---------------------------------------------------------------- every committed test carries its answers
ANSWERLESS = {  # their public sources give per-model correctness, not the right answer (../shared/data/README.md)
    "modelsat-smollm2-routerbench": "RouterBench (routerbench_zs CSVs: prompt, eval_name, one 0/1 column per model)",
    "modelsat-smollm2-routerdc": "RouterDC (split2_model7 JSON: question and per-model scores)",
}


@pytest.mark.parametrize("checkpoint", sorted(p.parent.name for p in (REPO / "checkpoints").glob("*/aptitude.json")))
def test_every_committed_aptitude_test_carries_every_answer(checkpoint: str) -> None:
    apt = Aptitude.load(REPO / "checkpoints" / checkpoint / "aptitude.json")
    if checkpoint in ANSWERLESS:
        assert not apt.answers, f"{checkpoint} now has answers: take it out of ANSWERLESS"
        with pytest.raises(AptitudeError, match="stores no answers"):
            graded_letters(apt)
        return
    letters = graded_letters(apt)                      # every question answered, by one of its option letters
    assert len(letters) == len(apt.question_ids)


def test_top_up_keeps_every_answer() -> None:
    """The questions top_up adds carry their answers from the table, and the base test's answers stay."""
    from types import SimpleNamespace

    import numpy as np

    from modelsat.aptitude import top_up

    base = make_aptitude(2, 2)
    qs, rows = [], []
    for t in range(2):
        for j in range(6):
            q = f"extra-{t}-{j}"
            qs.append({"question_id": q, "text": f"Question {100 + 6 * t + j}?\nA. a\nB. b\nC. c", "task": f"task{t}",
                       "source": "s", "answer": "ABC"[j % 3]})
            rows += [{"model": m, "question_id": q, "score": float((j + k) % 2)} for k, m in enumerate(["m1", "m2"])]
    questions, results = pd.DataFrame(qs), pd.DataFrame(rows)

    def outcome_matrix(ids, models):
        table = results.pivot(index="question_id", columns="model", values="score")
        return table.reindex(index=ids, columns=models).to_numpy(dtype=np.float64)

    table = SimpleNamespace(questions=questions, model_names=["m1", "m2"], outcome_matrix=outcome_matrix)
    bigger = top_up(base, table, 3)
    assert bigger.per_task == 5 and set(bigger.answers) == set(bigger.question_ids)
    answer = dict(zip(questions["question_id"], questions["answer"]))
    assert all(bigger.answers[q] == (base.answers.get(q) or answer[q]) for q in bigger.question_ids)
    smaller = bigger.head(bigger.num_tasks, per_task=base.per_task)              # the base of a topped-up test
    assert smaller.fingerprint == base.fingerprint and smaller.answers == base.answers
    assert bigger.head(1, per_task=1).question_ids == bigger.question_ids[:1]
    with pytest.raises(AptitudeError, match="at least one task and one question"):
        bigger.head(2, per_task=0)
    with pytest.raises(AptitudeError, match="at most the test itself"):
        bigger.head(bigger.num_tasks, per_task=bigger.per_task + 1)
