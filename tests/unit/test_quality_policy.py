"""The quality strategy's policy and loop as pure objects: table rows, exploration budget, demotion, and the
spend-aware choice; the budget stage's projection that turns it on."""

from __future__ import annotations

import asyncio
import random
from datetime import UTC, datetime
from pathlib import Path

import yaml

from gateway.config import BudgetRule, parse_config
from gateway.quality.allocate import Obs, allocate, apply
from gateway.quality.loop import QualityLoop, beta_lower
from gateway.quality.table import QualityPolicy, prompt_chars
from gateway.stages.budget import projected_usd


def policy(tmp_path: Path, rows: dict, **quality: object) -> QualityPolicy:
    table = tmp_path / "t.yaml"
    table.write_text(yaml.safe_dump({"categories": rows}))
    cfg = parse_config(
        yaml.safe_dump(
            {
                "models": {
                    "auto": {
                        "strategy": "quality",
                        "quality": {"table": str(table), **quality},
                        "deployments": [
                            {"id": "big", "model": "big-1", "price": {"input": 10, "output": 30}},
                            {"id": "small", "model": "small-1", "price": {"input": 0.5, "output": 1}},
                        ],
                    }
                }
            }
        )
    )
    return QualityPolicy(cfg.models["auto"], cfg.models, {"big": 40.0, "small": 1.5})


def test_rows_default_and_unknown(tmp_path: Path) -> None:
    p = policy(tmp_path, {"math": {"model": "small-1", "threshold": 0.8}})
    assert p.default == "big"  # the priciest deployment
    assert p.choose("math", 50.0)[0] == "small"
    assert p.choose(None, 50.0)[0] == "big" and p.choose("poetry", 50.0)[0] == "big"


def test_exploration_never_exceeds_its_share(tmp_path: Path) -> None:
    p = policy(tmp_path, {"law": {"model": "big", "threshold": 0.8}}, explore=0.05)
    picks = [p.choose("law", 50.0)[0] for _ in range(1000)]
    for i in range(1, 1001):
        assert picks[:i].count("small") <= 0.05 * i
    assert picks.count("small") == 50


def test_spend_aware_picks_the_cheapest_that_meets_the_bar_on_its_mean(tmp_path: Path) -> None:
    rows = {
        "law": {"model": "big", "threshold": 0.8, "models": {"big": {"quality": 0.9, "n": 50}, "small": {"quality": 0.84, "n": 50}}},
        "math": {"model": "big", "threshold": 0.8, "models": {"big": {"quality": 0.9, "n": 50}, "small": {"quality": 0.6, "n": 50}}},
    }  # fmt: skip
    p = policy(tmp_path, rows)
    QualityLoop({"auto": p}, None)  # wires the estimates
    assert p.choose("law", 50.0)[0] == "big"  # normally: the table's row
    dep, why = p.choose("law", 50.0, thrifty=True)
    assert dep == "small" and "spend-aware" in why  # small's mean (prior 0.84 over 20 items) meets 0.8
    assert p.choose("math", 50.0, thrifty=True)[0] == "big"  # small does not meet math's bar
    assert p.choose(None, 50.0, thrifty=True)[0] == "big"  # no category: no evidence to go cheaper on


def test_demotion_after_min_signals_and_restoration(tmp_path: Path) -> None:
    p = policy(
        tmp_path, {"math": {"model": "small", "threshold": 0.7, "quality": 0.9, "n": 100}}, min_signals=3
    )
    events: list[dict] = []
    loop = QualityLoop({"auto": p}, None, on_change=events.append)

    async def run() -> None:
        for _ in range(2):
            assert await loop.observe("auto", "math", "small", 0.0, "feedback") is None
        n = 2
        while p.rows["math"].deployment == "small":
            await loop.observe("auto", "math", "small", 0.0, "feedback")
            n += 1
        assert p.choose("math", 50.0)[0] == "big" and events[-1]["event"] == "demoted" and n <= 10
        while p.rows["math"].deployment == "big":  # exploration's answers come back good
            await loop.observe("auto", "math", "small", 1.0, "feedback")
        assert events[-1]["event"] == "restored"

    asyncio.run(run())
    assert beta_lower(90, 10) < 0.9 < beta_lower(900, 10) + 0.1


def test_projected_spend() -> None:
    rule = BudgetRule(usd=10.0, period="day")
    noon = datetime(2026, 3, 10, 12, tzinfo=UTC).timestamp()
    assert projected_usd(rule, 6.0, noon) == 12.0  # half the day gone, 6 spent: on course for 12 > 10
    assert projected_usd(rule, 6.0, datetime(2026, 3, 10, 0, 0, 30, tzinfo=UTC).timestamp()) is None
    assert projected_usd(BudgetRule(usd=10.0, period="lifetime"), 6.0, noon) is None


def test_canary_share_goes_to_the_rows_candidate(tmp_path: Path) -> None:
    p = policy(tmp_path, {"law": {"model": "big", "candidate": "small"}}, canary_percent=10)
    assert p.choose("law", 5.0)[0] == "small" and "canary 10%" in p.choose("law", 5.0)[1]
    assert p.choose("law", 50.0)[0] == "big"


def test_a_classifier_from_other_text_features_is_refused(tmp_path: Path) -> None:
    import numpy as np
    import pytest

    from gateway.config import ConfigError
    from gateway.quality.classifier import Classifier, fingerprint, train

    clf = train(
        ["what is 2 + 2", "name a planet", "solve x + 1 = 3", "which star is nearest"], ["m", "a", "m", "a"]
    )
    good = tmp_path / "good.npz"
    clf.save(good)
    assert Classifier.load(good).predict("solve 2x = 4")[0] in ("m", "a")
    stale = tmp_path / "stale.npz"  # as written before features were fingerprinted (or by another core)
    np.savez(stale, w=clf.w, b=clf.b, labels=np.array(clf.labels), bits=clf.bits)
    # trained on the compliance scanners' features (before the classifier had its own): a fingerprint of those
    shared = tmp_path / "shared.npz"
    np.savez(
        shared,
        w=clf.w,
        b=clf.b,
        labels=np.array(clf.labels),
        bits=clf.bits,
        max_chars=1200,
        fingerprint=12345,
    )
    other_cut = tmp_path / "cut.npz"  # the fingerprint of other cut lengths than the file says
    np.savez(
        other_cut, w=clf.w, b=clf.b, labels=np.array(clf.labels), bits=clf.bits, head=100, tail=0,
        fingerprint=fingerprint(clf.bits),
    )  # fmt: skip
    assert Classifier(clf.labels, clf.w, clf.b, head=100, tail=0).probs("x").shape == (2,)
    for path, ok in ((good, True), (stale, False), (shared, False), (other_cut, False)):
        text = yaml.safe_dump(
            {
                "models": {
                    "auto": {
                        "strategy": "quality",
                        "quality": {"classifier": str(path)},
                        "deployments": [{"id": "a", "model": "a"}],
                    }
                }
            }
        )
        if ok:
            parse_config(text)
        else:
            with pytest.raises(ConfigError, match="retrain"):
                parse_config(text)


def test_refusals_are_told_from_answers() -> None:
    from gateway.quality.signals import refusal_text, refused
    from gateway.types import ChatResponse, Choice, Message, Usage

    for text in (
        "I'm sorry, but I can't help with that.",
        "I\u2019m sorry, I can\u2019t provide that.",
        "I cannot assist with that request.",
        "As an AI language model, I cannot provide medical advice.",
        "Sorry, but I am unable to comply.",
        "I won't be able to help with this.",
        "I must decline.",
    ):
        assert refusal_text(text), text
    for text in (
        "Answer: B",
        "I can help with that! Here is how.",
        "I'm sorry for the confusion earlier. The answer is 4.",
        "I cannot believe how simple this is: x = 2.",
        "I'm sorry, but I can't help with that. " + "However, here is a long explanation. " * 30,
        "",
    ):
        assert not refusal_text(text), text

    def answer(content: str | None, finish: str = "stop") -> ChatResponse:
        msg = Message(role="assistant", content=content)
        return ChatResponse("r", "m", [Choice(index=0, message=msg, finish_reason=finish)], Usage())

    assert refused(answer("I cannot help with that."))
    assert refused(answer(None, "content_filter"))
    assert not refused(answer("Paris."))


def test_min_chars_keeps_short_prompts_on_the_default(tmp_path: Path) -> None:
    p = policy(tmp_path, {"law": {"model": "small-1", "threshold": 0.7, "min_chars": 400}})
    dep, why = p.choose("law", 50.0, chars=lambda: 120)
    assert dep == "big" and "120 < 400" in why
    assert p.choose("law", 50.0, chars=lambda: 400)[0] == "small"
    p.demote("law", "big", "demoted")  # once demoted, every length goes to the default
    assert p.choose("law", 50.0, chars=lambda: 5000)[0] == "big"


def test_prompt_chars_counts_text_of_strings_and_parts() -> None:
    parts = [{"type": "text", "text": "abc"}, {"type": "image_url", "image_url": {"url": "x" * 50}}]
    assert prompt_chars(["hello", parts, None]) == 8


def test_allocation_moves_long_prompts_first_and_checks_the_goal_out_of_fold() -> None:
    """Same quality gap everywhere: the long prompts save the most per point lost, so they move first; the
    proposal's cross-validated quality meets the goal."""
    rng = random.Random(1)
    obs = []
    for i in range(2000):
        chars = rng.randint(100, 4000)
        strong = 1.0 if rng.random() < 0.9 else 0.0
        weak = strong if rng.random() < 0.9 else 0.0
        cost = {"big": chars * 10e-6 + 1e-4, "small": chars * 0.5e-6 + 1e-5}
        obs.append(Obs("law" if i % 2 else "math", chars, {"big": strong, "small": weak}, cost))
    al = allocate(obs, "big", 0.95)
    assert al.cv_kept >= 0.95 and al.aimed >= 0.95 and al.folds == 5
    for mv in al.moves.values():
        assert mv.model == "small" and 500 < mv.min_chars < 4000
    served = [apply(al.moves, o, "big") for o in obs]
    long_share = sum(s == "small" for s, o in zip(served, obs, strict=True) if o.chars > 3500) / sum(
        o.chars > 3500 for o in obs
    )
    assert long_share == 1.0
    assert all(s == "big" for s, o in zip(served, obs, strict=True) if o.chars < 300)


def test_a_bench_proposes_the_same_allocation_whatever_order_its_answers_came_back_in() -> None:
    """The cross-validation's folds follow the items, not the order of ``results.jsonl`` (concurrent calls finish
    in any order): the same results give the same routing table."""
    from gateway.quality.cli import _allocate
    from gateway.quality.runner import Result
    from gateway.quality.suites import Item, Suite

    rng = random.Random(3)
    suites, results = [], []
    for cat in ("law", "math", "trivia"):
        items = []
        for i in range(300):
            chars = rng.randint(50, 3000)
            items.append(Item(f"{cat}-{i}", cat, [{"role": "user", "content": "x" * chars}], split="bench"))
            strong = 1.0 if rng.random() < 0.9 else 0.0
            weak = strong if rng.random() < {"law": 0.8, "math": 0.85, "trivia": 0.97}[cat] else 0.0
            for model, sc, usd in (("big", strong, chars * 1e-5), ("small", weak, chars * 6e-7)):
                results.append(Result(model, cat, f"{cat}-{i}", sc, 200, 10.0, cost_usd=usd))
        suites.append(Suite(cat, {"type": "exact"}, items))
    first = _allocate(suites, results, 0.95, "big")
    for seed in range(3):
        random.Random(seed).shuffle(results)
        again = _allocate(suites, results, 0.95, "big")
        assert (again.moves, again.aimed, again.cv_kept, again.cv_saved) == (
            first.moves,
            first.aimed,
            first.cv_kept,
            first.cv_saved,
        )
    assert first.moves  # something moved: the comparison is not between two empty tables
