"""How well free-text SMS are matched to topics: per language, on tests/unit/sms_questions.yaml.

    .venv/bin/python bench/sms_accuracy.py            # the figures and every miss
    .venv/bin/python bench/sms_accuracy.py --sweep    # accuracy and precision per threshold

A confident match is an answer; anything else goes "to a lawyer", which is right for the
questions labelled `none`. Top-1 accuracy: the share of questions whose outcome (topic, or
lawyer) is the label. Precision: the share of confident answers that are right. Recall: the
share of topic questions answered confidently with their topic.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from flows.content import load_content  # noqa: E402
from flows.faq import MIN_RATIO, MIN_SCORE, FaqMatcher  # noqa: E402

QUESTIONS = ROOT / "tests" / "unit" / "sms_questions.yaml"
NONE = "none"


@dataclass(frozen=True)
class Outcome:
    text: str
    label: str
    answer: str  # the topic answered, or NONE (to a lawyer)
    best: str | None  # the best topic even when not confident
    score: float


@dataclass(frozen=True)
class Figures:
    questions: int
    accuracy: float
    precision: float
    recall: float
    confident: int
    false_confident_none: int
    misses: list[Outcome]


def load_questions(path: Path = QUESTIONS) -> dict[str, list[tuple[str, str]]]:
    data = yaml.safe_load(path.read_text(encoding="utf-8"))
    return {
        language: [(str(q["text"]), str(q["topic"])) for q in items]
        for language, items in data.items()
    }


def evaluate(matcher: FaqMatcher, language: str, questions: list[tuple[str, str]]) -> Figures:
    outcomes = []
    for text, label in questions:
        match = matcher.match(text, language)
        answer = match.topic if match is not None and match.confident else NONE
        best = match.topic if match is not None else None
        outcomes.append(Outcome(text, label, answer, best, match.score if match else 0.0))
    right = [o for o in outcomes if o.answer == o.label]
    answered = [o for o in outcomes if o.answer != NONE]
    topical = [o for o in outcomes if o.label != NONE]
    return Figures(
        questions=len(outcomes),
        accuracy=len(right) / len(outcomes),
        precision=sum(o.answer == o.label for o in answered) / len(answered) if answered else 1.0,
        recall=sum(o.answer == o.label for o in topical) / len(topical) if topical else 1.0,
        confident=len(answered),
        false_confident_none=sum(o.label == NONE and o.answer != NONE for o in outcomes),
        misses=[o for o in outcomes if o.answer != o.label],
    )


def report(figures: dict[str, Figures]) -> None:
    for language, f in figures.items():
        print(f"== {language}: {f.questions} questions")
        print(f"   top-1 accuracy (confident = answer, else to a lawyer): {f.accuracy:.3f}")
        print(f"   precision of confident matches: {f.precision:.3f} ({f.confident} confident)")
        print(f"   recall (topic questions answered with their topic): {f.recall:.3f}")
        print(f"   `none` questions answered confidently: {f.false_confident_none}")
        print(f"   misses ({len(f.misses)}):")
        for o in f.misses:
            said = o.answer if o.answer != NONE else f"lawyer (best {o.best}, {o.score})"
            print(f"     - [{o.label} -> {said}] {o.text}")


def sweep(content_questions: dict[str, list[tuple[str, str]]]) -> None:
    content = load_content()
    print("min_score min_ratio | " + " | ".join(
        f"{lang}: acc prec rec noneFP" for lang in content_questions))
    for min_score in (0.5, 0.75, 1.0, 1.5, 2.0):
        for min_ratio in (1.01, 1.5, 2.0, 3.0):
            matcher = FaqMatcher(content, min_score=min_score, min_ratio=min_ratio)
            cells = []
            for language, questions in content_questions.items():
                f = evaluate(matcher, language, questions)
                cells.append(f"{f.accuracy:.3f} {f.precision:.3f} {f.recall:.3f} "
                             f"{f.false_confident_none}")
            mark = " <- used" if (min_score, min_ratio) == (MIN_SCORE, MIN_RATIO) else ""
            print(f"{min_score:9} {min_ratio:9} | " + " | ".join(cells) + mark)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sweep", action="store_true", help="try other thresholds")
    args = parser.parse_args()
    questions = load_questions()
    if args.sweep:
        sweep(questions)
        return
    matcher = FaqMatcher(load_content())
    print(f"thresholds: min_score={MIN_SCORE}, min_ratio={MIN_RATIO}; questions: {QUESTIONS}")
    report({language: evaluate(matcher, language, qs) for language, qs in questions.items()})


if __name__ == "__main__":
    main()
