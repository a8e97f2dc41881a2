"""Surface rules over dialogue turns: a turn's content words, who it names, whether it corrects its
speaker or asks a question, and the line it is shown and encoded as.

These are rules over English text, not parsers; each says what it misses. Retrieval's channels
(`Memory.search`) and the context bundle's turn windows read them.
"""

from __future__ import annotations

import re

from .session import fold

# Words too common to tell memories apart: left out of content words and of the lexical channel's query.
STOPWORDS = frozenset("""a about after again all also am an and any are as at be been before being but by can could
did do does doing done during each else ever for from had has have having he her here hers him his how i if in into is
it its just me more most my no nor not now of off on once only or other our out over own same she should so some such
than that the their them then there these they this those through to too under until up very was we were what when
where which while who whom why will with would you your yours""".split())


def content_words(text: str, min_len: int = 3) -> frozenset[str]:
    """The content words of a text: folded, stopwords and short words left out."""
    return frozenset(w for w in re.findall(r"[^\W_]+", fold(text)) if len(w) >= min_len and w not in STOPWORDS)


NAME_WORD = re.compile(r"(?<![\w'’])([^\W\d_][\w-]*)")  # a word not inside another ("Nils" of "Nils's")
_TOKEN = re.compile(r"[^\W\d_][\w'’-]*|\S")
_POSSESSIVE = re.compile(r"([^\W\d_][\w-]*?)(['’]s)?")
_CONTRACTED = STOPWORDS | {"let"}  # "That's", "How's", "Let's": not possessives
_PRONOUN_I = frozenset({"I", "I'm", "I've", "I'd", "I'll", "I’m", "I’ve", "I’d", "I’ll"})
# words after a run of capitalised words that do not make it a clause's subject ("... to New York on")
_NOT_A_VERB = frozenset("""a about above across after again against along among an and around as at before behind
below beside between beyond but by during for from in into last near next nor of off on onto or out over past since
so than the then this through till to toward towards under until up upon via when where while with within without
yet""".split())


def named_people(text: str) -> frozenset[tuple[str, ...]]:
    """The people a text names as whose something is or who does something, as folded word
    tuples: a capitalised possessive ("Gustav Garcia's car", "my sister Anna's dog") or two or
    more capitalised words that are a clause's subject ("Jorge Costa is an optician", "I heard
    that Olga Iqbal adopted a puppy"). A surface rule, not a parser: "New York is lovely" counts,
    "moved to New York" and "rereading Wolf Hall for the fifth time" do not, and neither does a
    name at the end of a sentence ("nothing beats ramen for Ida Adler")."""
    out = set()
    for sentence in re.split(r"(?<=[.!?])\s+|\n", text):
        run: list[str] = []
        for t in [*_TOKEN.findall(sentence), "."]:
            m = _POSSESSIVE.fullmatch(t)
            if m and t[0].isupper() and t not in _PRONOUN_I:
                run.append(m.group(1))
                if m.group(2):  # "Ana's", but not "That's" or "How's"
                    if len(run) > 1 or fold(run[0]) not in _CONTRACTED:
                        out.add(tuple(fold(w) for w in run))
                    run = []
                continue
            if len(run) >= 2 and t[0].islower() and t.lower() not in _NOT_A_VERB:
                out.add(tuple(fold(w) for w in run))
            run = []
    return frozenset(out)


# A turn that takes back what its speaker just said. Phrases anywhere in the turn, or openers at
# its start; "sorry" and "actually" alone are not enough ("sorry to hear that", "actually I love it").
# Matched against the lower-cased text: IGNORECASE made the rule twice as slow.
_CORRECTION = re.compile(
    r"\b(?:i meant(?! to\b)|i mean,|i misspoke|i (?:said|got) (?:that|it) wrong|i (?:mixed|got) (?:it|them|that) (?:up|mixed up)"
    r"|i was wrong|correction|correcting myself|to correct myself|let me correct|scratch that|strike that"
    r"|my mistake|my bad|not what i said|i said .{1,40}? but i meant|that was wrong|that's wrong|typo)\b"
    r"|^\W*(?:oops|whoops|oh wait|wait,? no|wait,? sorry|no wait|sorry,? (?:i|it'?s|it was|no)\b"
    r"|actually,? no\b|actually,? (?:it'?s|it was|i meant)\b|err?m?,? (?:no|i mean))")
CORRECTION_REACH = 4  # a correction takes back its speaker's latest statement among the turns this close before it


def is_correction(text: str) -> bool:
    """Whether a turn corrects what its speaker said just before ("oops, I meant figs",
    "correction: it was Tuesday"). A surface rule over common English phrasings."""
    return _CORRECTION.search(text.lower().replace("’", "'")) is not None


def corrects(text: str, has_speaker: bool) -> bool:
    """Whether a memory corrects its speaker's earlier statement. Only a turn with a speaker can, so
    a fact store's rows skip the rule (and its 10^5 regex passes on a reopen)."""
    return bool(has_speaker) and is_correction(text)


def is_question(text: str) -> bool:
    return text.rstrip().endswith("?")


def turn_line(row: dict) -> str:
    return row["text"] if row.get("speaker") is None else f"{row['speaker']}: {row['text']}"


def turn_window(earlier: list[str], row: dict, m: int) -> str:
    """The text a dialogue turn's context point encodes: its `m` previous lines, then its own."""
    return "\n".join([*earlier[-m:], turn_line(row)])
