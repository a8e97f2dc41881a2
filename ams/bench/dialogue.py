"""A seeded generator of multi-session chat transcripts whose facts are said in passing.

Two or three friends chat over many dated conversations. Most turns are chit-chat; facts about the
speakers come up the way they do in real talk:
- in passing, without the relation's name: "ugh, Biscuit chewed my shoes again";
- as a reply to the other speaker's question, with a pronoun: "we went with Mochi in the end"
  after "wait, what did you name the puppy?" (the turn is only understood with its neighbour);
- corrected a turn or two later: "actually no, I mixed it up, it's Porto";
- superseded in a later conversation: "I just moved to Graz." (the latest state is asked for);
- about other people, the distractors: "oh btw, Lukas Berg has a dog named Pepper."
Every speaker has the same kinds of facts, so "Ana's dog" competes with "Ben's dog" and with other
people's dogs. Questions are third-person ("What is the name of Ana's dog?") with the value as the
keyword, and the superseded value as a forbidden word.

Splits: every template, value and name is either `train` or `heldout` (the alternation of
`synthetic._split`), so a method tuned on `train` transcripts never sees a held-out one.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from ..session import Fact, Query, Session
from .synthetic import FIRST, LAST, RELATIONS, SPLITS, T0, _fill, _question, _split, _Subject


@dataclass(frozen=True)
class Talk:
    """How a relation comes up in conversation ({v}: the value)."""

    say: tuple[str, ...]  # first person, in passing
    ask: tuple[str, ...]  # another speaker's question that invites the value
    reply: tuple[str, ...]  # the answer to `ask`, naming the value but not the relation


TALK: dict[str, Talk] = {
    "dog": Talk(("ugh, my dog {v} chewed my shoes again", "took {v} to the vet this morning, my poor pup hates it",
                 "{v} (my dog) woke me up at 5am barking at nothing", "walking my dog {v} in this rain is no fun"),
                ("how's your dog doing? what was his name again?", "wait, what did you name the puppy?"),
                ("{v}! he's doing great", "we went with {v} in the end")),
    "cat": Talk(("my cat {v} knocked a glass off the table lol", "{v}, my cat, has been sleeping on my laptop all day",
                 "had to take my cat {v} to the groomer", "my kitten {v} finally learned to use the cat flap"),
                ("do you still have that cat? what's she called?", "what did you end up naming the kitten?"),
                ("{v}, and she's a menace", "yes! {v} still rules the house")),
    "city": Talk(("the rent here in {v} keeps going up", "I love living in {v}, the old town is beautiful",
                  "it's been raining in {v} all week", "my flat in {v} is finally finished"),
                 ("where are you living these days?", "which city did you end up settling in?"),
                 ("still in {v}, can't complain", "{v}, for now at least")),
    "job": Talk(("long shift today, being a {v} is exhausting", "work as a {v} has been crazy this month",
                 "as a {v} I get weird questions all the time", "another long day at work, such is life as a {v}"),
                ("what do you do for work again?", "remind me what your job is?"),
                ("I'm a {v}", "{v}, for almost ten years now")),
    "food": Talk(("I made {v} again tonight, can't get enough of it", "honestly {v} is my favourite thing to eat",
                  "found a great place that does {v}, my favourite", "craving {v} as usual"),
                 ("what's your go-to comfort food?", "what would you eat every day if you could?"),
                 ("{v}, no question", "easy: {v}")),
    "allergy": Talk(("I have to check every menu because of my {v} allergy", "my {v} allergy flared up again",
                     "can't go near {v}, I'm allergic", "the doctor confirmed I'm allergic to {v}"),
                    ("are you allergic to anything?", "what was the thing you react badly to?"),
                    ("{v}, sadly", "yeah, {v}, it's annoying")),
    "instrument": Talk(("practised the {v} for two hours today", "my {v} teacher says I'm improving",
                        "I finally bought a new {v}", "band rehearsal tonight, bringing my {v}"),
                       ("what instrument do you play again?", "are you still playing music?"),
                       ("the {v}, still", "yes, the {v}, every weekend")),
    "car": Talk(("my {v} broke down on the highway again", "just took the {v} in for its service",
                 "love driving my {v} on the coast road", "got a parking ticket with the {v} today"),
                ("what are you driving these days?", "what kind of car do you have?"),
                ("an old {v}", "still the {v}")),
    "trip": Talk(("I booked flights to {v} for next year!", "saving every penny for my trip to {v}",
                  "reading guidebooks about {v} for my holiday", "can't wait for the {v} trip next spring"),
                 ("where are you going on holiday?", "any travel plans for next year?"),
                 ("{v}!", "yes, {v}, finally")),
    "sport": Talk(("{v} practice wiped me out tonight", "we won our {v} match on Sunday",
                   "joined a {v} club last month", "pulled a muscle playing {v}"),
                  ("what sport are you into these days?", "how do you keep fit?"),
                  ("{v}, twice a week", "mostly {v}")),
    "language": Talk(("my {v} lessons are getting harder", "practised my {v} with an app on the train",
                      "I can finally order coffee in {v}", "started a {v} course at the community centre"),
                     ("which language are you learning?", "how are the language classes going? which one was it?"),
                     ("{v}, and it's tough", "going well! {v} grammar is wild though")),
    "book": Talk(("rereading {v} for the fifth time", "{v} is still the best novel ever written",
                  "lent my copy of {v} to a friend, it's my favourite book", "just finished {v} again, my all-time favourite"),
                 ("what's your favourite book?", "what are you reading at the moment?"),
                 ("{v}, always", "{v} again, I know")),
    "plant": Talk(("the {v} on my balcony are finally growing", "watered the {v} this morning",
                   "I'm so proud of my {v}", "repotted all my {v} today"),
                  ("how's the gardening going?", "what are you growing this year?"),
                  ("the {v} are thriving", "mostly {v}")),
}
REACT = ("haha nice", "oh no!", "that's great", "wow", "lol classic", "sounds fun", "sorry to hear that", "no way",
         "cool cool", "good for you", "love that", "oh really?")
CORRECT = ("wait, sorry, I said that wrong. it's {v}.", "actually no, I mixed it up, it's {v}",
           "correction: {v}, not what I said before", "oops, I meant {v}")
UPDATE = ("big news: {u}", "so, an update: {u}", "guess what, {u}", "oh and {u}")
ASIDE = ("oh btw, {f}", "funny thing, {f}", "random but {f}", "I heard that {f}")
CHAT = ("how was your weekend?", "pretty quiet, mostly cleaned the flat", "did you see the game last night?",
        "traffic was terrible this morning", "I need more coffee", "any plans for tonight?",
        "just got back from the shops", "work has been so busy", "the weather is finally nice",
        "I'm so tired today", "what are you up to?", "not much, just relaxing", "we should grab lunch sometime",
        "sure, next week works", "did you watch that new series?", "yes, the ending was wild",
        "my phone battery died again", "it's been a long week", "I'm thinking of getting a haircut",
        "happy Friday!", "have you eaten yet?", "I'm cooking something simple tonight", "my neighbours are so loud",
        "I finally cleaned out my inbox", "I should really get a dog someday", "cats are so funny",
        "thinking about learning a language", "I hate driving in the city", "planning a trip is so stressful",
        "my book club meets tomorrow", "the gym was packed today", "I burnt my toast again",
        "can you believe it's already this month?", "my sister called, all good there",
        "I've been sleeping badly", "the new cafe downstairs is nice", "I'm off tomorrow, finally",
        "ugh, mondays", "I lost my keys again", "let's catch up properly soon")
SESSION_GAP_S = 3 * 86400  # conversations about three days apart
MAIN_FACT_CAP = 13


@dataclass
class _Turn:
    speaker: str
    text: str
    key: tuple[str, str] | None = None  # (speaker, relation) whose value this turn states
    free: bool = False  # chit-chat: its speaker is chosen to take turns with the previous one


def _pick(rng: random.Random, pool: tuple[str, ...], split: str) -> str:
    return rng.choice(_split(pool, split))


def generate_dialogue(n: int, *, seed: int = 0, split: str = "heldout", n_queries: int = 20,
                      correction_share: float = 0.15, update_share: float = 0.15) -> Session:
    """A transcript of `n` turns (20 <= n <= 10,000) and up to `n_queries` third-person questions.

    Args:
        n: number of turns.
        seed: equal seeds give equal transcripts.
        split: "train" or "heldout": which templates, values and names to draw from.
        n_queries: questions asked, each about one speaker's fact.
        correction_share, update_share: shares of asked facts that are corrected within their
            conversation, or superseded in a later one (the answer must be the new value).

    Returns:
        A `Session` whose facts are the turns (with `speaker` and one `session` per conversation)
        and whose questions name the gold turn.
    """
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}")
    if not 20 <= n <= 10_000:
        raise ValueError("n must be between 20 and 10,000")
    rng = random.Random(f"dialogue:{seed}:{split}:{n}")
    first = list(_split(FIRST, split))
    rng.shuffle(first)
    speakers = first[: 3 if n >= 200 else 2]
    others = [f"{a} {b}" for a in first[3:] for b in _split(LAST, split)]
    rng.shuffle(others)
    relations = [r for r in RELATIONS if r.name in TALK]
    pools = {r.name: _split(r.values, split) for r in relations}

    slots = [(s, r) for s in speakers for r in relations]
    rng.shuffle(slots)
    slots = slots[: min(len(slots), max(4, n // 6), MAIN_FACT_CAP * len(speakers))]
    n_q = min(n_queries, len(slots))
    asked = slots[:n_q]
    n_corr = int(round(n_q * correction_share))
    n_upd = min(int(round(n_q * update_share)), sum(1 for _, r in asked[n_corr:] if r.update))
    corrected = asked[:n_corr]
    updated = [sl for sl in asked[n_corr:] if sl[1].update][:n_upd]

    # Exchanges: lists of turns that stay together inside one conversation.
    value: dict[tuple[str, str], str] = {}
    old: dict[tuple[str, str], str] = {}
    early, late = [], []
    for s, r in slots:
        key, talk = (s, r.name), TALK[r.name]
        v = rng.choice(pools[r.name])
        value[key] = v
        other = rng.choice([p for p in speakers if p != s])
        if rng.random() < 0.4:  # asked for, answered with a pronoun
            ex = [_Turn(other, _pick(rng, talk.ask, split)), _Turn(s, _pick(rng, talk.reply, split).format(v=v), key)]
        else:
            ex = [_Turn(s, _pick(rng, talk.say, split).format(v=v), key), _Turn(other, _pick(rng, REACT, split))]
        if (s, r) in corrected:
            new = rng.choice([x for x in pools[r.name] if x != v])
            ex[[t.key for t in ex].index(key)].key = None  # the gold turn is the correction
            ex.append(_Turn(s, _pick(rng, CORRECT, split).format(v=new), key))
            old[key], value[key] = v, new
        early.append(ex)
        if (s, r) in updated:
            new = rng.choice([x for x in pools[r.name] if x != value[key]])
            u = _fill(r.update, _Subject("I", "my", "me", "I"), new)
            ex[[t.key for t in ex].index(key)].key = None
            late.append((len(early) - 1, [_Turn(s, _pick(rng, UPDATE, split).format(u=u), key),
                                          _Turn(rng.choice([p for p in speakers if p != s]), _pick(rng, REACT, split))]))
            old[key], value[key] = value[key], new
    n_main = sum(len(ex) for ex in early) + sum(len(ex) for _, ex in late)
    asides = []
    for i in range(max(0, (n - n_main) // 10)):  # other people's facts: the distractors
        r, who = rng.choice(relations), others[i % len(others)]
        f = _fill(_pick(rng, r.facts, split), _Subject(who, f"{who}'s", who, who), rng.choice(pools[r.name]))
        f = f if f.startswith(who) else f[0].lower() + f[1:]  # "There is a cat at ..." -> "there is ..."
        asides.append([_Turn(rng.choice(speakers), _pick(rng, ASIDE, split).format(f=f))])

    # Lay exchanges out in time: main facts spread over the first two thirds, updates after their
    # original, chit-chat everywhere; then cut into conversations of 8-30 turns.
    events = [(rng.random() * 0.66, ex) for ex in early]
    pos = {i: events[i][0] for i in range(len(early))}
    events += [(pos[i] + (1 - pos[i]) * (0.3 + 0.7 * rng.random()), ex) for i, ex in late]
    events += [(rng.random(), ex) for ex in asides]
    n_fixed = sum(len(ex) for _, ex in events)
    for _ in range(max(0, n - n_fixed)):
        events.append((rng.random(), [_Turn("", _pick(rng, CHAT, split), free=True)]))
    events.sort(key=lambda e: e[0])
    turns = [t for _, ex in events for t in ex][:n]
    for i, turn in enumerate(turns):
        if turn.free:
            turn.speaker = rng.choice([p for p in speakers if i == 0 or p != turns[i - 1].speaker])

    facts, gold = [], {}
    conv, left, t = 0, rng.randint(8, 30), float(T0)
    for i, turn in enumerate(turns):
        if left == 0:
            conv, left = conv + 1, rng.randint(8, 30)
            t = T0 + conv * SESSION_GAP_S + rng.randrange(3600 * 8)
        left -= 1
        t += rng.randint(10, 120)
        tid = f"t{i + 1:05d}"
        facts.append(Fact(id=tid, text=turn.text[0].upper() + turn.text[1:], ts=t, session=f"conv-{conv:03d}",
                          speaker=turn.speaker))
        if turn.key is not None:
            gold[turn.key] = tid
    queries = []
    for s, r in asked:
        key = (s, r.name)
        if key not in gold:  # cut off by n
            continue
        q = _question(_pick(rng, r.questions, split), _Subject(s, f"{s}'s", s, s))
        queries.append(Query(text=q, keywords=[value[key]], fact_ids=[gold[key]],
                             forbidden=[old[key]] if key in old else []))
    return Session(facts, queries)
