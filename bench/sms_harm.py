"""The SMS dialogue's harmful mistakes on residents' messages (bench/sms_review_corpus.txt).

Every message goes through `flows.sms.SmsDialogue` in seven states (Russian, Kazakh or no
language remembered; a question open or not; right after a topic's answer) and is counted under
the four mistakes that hurt a resident, worst first:

1. not a stop, read as one (they silently stop getting SMS);
2. a problem for a lawyer answered with a topic's stock text;
3. a question swallowed as a thanks (no reply, nothing queued);
4. a stop not honoured.

    .venv/bin/python bench/sms_harm.py        # the counts
    .venv/bin/python bench/sms_harm.py -v     # and each message

Figures are counts of distinct messages (and of runs over the seven states), not times: the
same on any machine. Labels are a reviewer's judgement, not ground truth (the file's header).
"""

from __future__ import annotations

import sys
from collections import defaultdict
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from flows.content import load_content  # noqa: E402
from flows.sms import SmsDialogue, SmsState  # noqa: E402

CORPUS = Path(__file__).with_name("sms_review_corpus.txt")
STATES = {
    "ru": SmsState(language="ru"),
    "kk": SmsState(language="kk"),
    "none": SmsState(language=None),
    "ru+open": SmsState(language="ru", question_open=True),
    "kk+open": SmsState(language="kk", question_open=True),
    "ru+after_pension": SmsState(language="ru", last_topic="pension",
                                 answered_text="когда пенсия мне придёт"),
    "kk+after_disability+open": SmsState(language="kk", last_topic="disability",
                                         question_open=True),
}
MISTAKES = {1: "not a stop, read as one", 2: "a lawyer's problem answered with a topic",
            3: "a question swallowed as a thanks", 4: "a stop not honoured"}


def corpus() -> list[tuple[str, str]]:
    """(text, wanted) pairs from the corpus file."""
    pairs = []
    for line in CORPUS.read_text(encoding="utf-8").splitlines():
        if line.strip() and not line.startswith("#"):
            wanted, text = line.strip().split(" | ", 1)
            pairs.append((text, wanted))
    return pairs


def mistake(wanted: str, kind: str) -> int | None:
    """Which of MISTAKES a reply of this kind is, for a message wanting `wanted`."""
    if wanted != "S" and kind == "stop":
        return 1
    if wanted == "L" and kind == "topic":
        return 2
    if (wanted == "L" or wanted.startswith("T")) and kind == "thanks":
        return 3
    if wanted == "S" and kind != "stop":
        return 4
    return None


def main() -> None:
    dialogue = SmsDialogue(load_content())
    found: dict[int, dict[str, list[str]]] = defaultdict(lambda: defaultdict(list))
    messages = corpus()
    for text, wanted in messages:
        for name, state in STATES.items():
            want = ("N" if state.question_open else "L") if wanted == "W" else wanted
            kind = dialogue.reply(text, state).kind
            which = mistake(want, kind)
            if which is not None:
                found[which][text].append(f"{name}->{kind}")
    print(f"{len(messages)} messages, {len(messages) * len(STATES)} replies")
    for number, title in MISTAKES.items():
        runs = sum(len(states) for states in found[number].values())
        print(f"{number}. {title}: {len(found[number])} messages ({runs} replies)")
        if "-v" in sys.argv:
            for text, states in found[number].items():
                print(f"     {text!r}: {', '.join(states)}")


if __name__ == "__main__":
    main()
