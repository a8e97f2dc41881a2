"""Surface rules over memories' text: a turn's content words, who it names, whether it corrects its
speaker or asks a question, and the line it is shown and encoded as; whom a fact is about.

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


def is_function_word(word: str) -> bool:
    """Whether a word (as written, perhaps with punctuation or a contraction: "I'm", "Is") is a
    stopword: a word that carries no fact of its own."""
    parts = re.findall(r"[^\W_]+", fold(word.strip()).split("'")[0].split("’")[0])
    return bool(parts) and all(p in STOPWORDS for p in parts)


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


# People a memory can be about besides its writer: kin, partners, friends and people of daily life.
# A relation is read where "my" or "our" names it ("my wife", "our son", "my best friend") or a named
# person's possessive does ("Lea Novak's sister"); plurals count as their singular.
RELATIONS = frozenset("""wife husband spouse partner fiance fiancee girlfriend boyfriend ex son daughter child kid
baby stepson stepdaughter mother mom mum mommy mummy mama father dad daddy papa parent stepmother stepfather
brother sister sibling twin stepbrother stepsister grandmother grandma granny nana grandfather grandpa granddad
grandparent grandson granddaughter grandchild grandkid aunt auntie uncle cousin niece nephew godmother godfather
godson goddaughter godchild mother-in-law father-in-law sister-in-law brother-in-law son-in-law daughter-in-law
in-laws friend bestie roommate flatmate housemate neighbour neighbor boss manager colleague coworker co-worker
teammate classmate teacher tutor mentor coach doctor dentist therapist landlord landlady tenant""".split())
_PLURAL = {"children": "child", "grandchildren": "grandchild"}
_MINE = re.compile(r"\b(?:my|our)\s+([\w-]+)(?:\s+([\w-]+))?")
_FIRST_PERSON = re.compile(r"\b(?:i|me|myself|mine|we|us|ourselves|ours)\b")  # "i'm": "i" is a word

Holder = tuple[frozenset[str], str]  # (a named person's folded words, or none; a relation, or "")
USER: Holder = (frozenset(), "")  # the writer: "I", "me", "my job"


def _relation(word: str | None) -> str:
    """`word` as a relation ("sisters" -> "sister"), or ""."""
    if not word:
        return ""
    word = _PLURAL.get(word, word)
    if word in RELATIONS:
        return word
    return word[:-1] if word.endswith("s") and word[:-1] in RELATIONS else ""


def holders(text: str, *, question: bool = False) -> frozenset[Holder]:
    """Whom a memory or question is about, as (name words, relation): the writer (`USER`, from
    "I", "me" or "my" before anything but a relation), a relation of theirs ("my wife" ->
    ((), "wife")), a named person (`named_people`; "Kofi Eriksen" -> ({"kofi", "eriksen"}, "")) or
    a named person's relation ("Lea Novak's sister" -> ({"lea", "novak"}, "sister")). A question
    also names people by one capitalised word after its first ("Where does Kofi live?").
    A surface rule, not a parser: the writer of "I married Ana" is found, the wife is not, and
    "our dog" is the writer's."""
    folded = fold(text)
    out: set[Holder] = set()
    user = _FIRST_PERSON.search(folded) is not None
    for m in _MINE.finditer(folded):
        relation = _relation(m.group(1)) or _relation(m.group(2))
        if relation:
            out.add((frozenset(), relation))
        else:
            user = True
    if user:
        out.add(USER)
    people = set(named_people(text))
    if question:  # a capitalised word of no name found already
        named = {w for p in people for w in p}
        people.update((w,) for m in NAME_WORD.finditer(text) if m.start() > 0 and m.group(1)[0].isupper()
                      and m.group(1) not in _PRONOUN_I and (w := fold(m.group(1))) not in named)
    for person in people:
        after = re.search(rf"\b{re.escape(' '.join(person))}['’]s\s+([\w-]+)(?:\s+([\w-]+))?", folded)
        relation = _relation(after.group(1)) or _relation(after.group(2)) if after else ""
        out.add((frozenset(person), relation))
    return frozenset(out)


def about_others(memory: frozenset[Holder], asked: frozenset[Holder]) -> bool:
    """Whether a memory is about people (`holders`) none of whom the question asks about. Two
    holders are one person when their relations agree and so do their names (a shared name word:
    "Kofi" is "Kofi Eriksen"), or neither has one."""
    if not memory or not asked:
        return False
    return not any(rm == ra and (nm & na if nm or na else True) for nm, rm in memory for na, ra in asked)
