"""A seeded generator of memory sessions that are hard the way real memory is hard.

One user tells the assistant N facts over several months, about themself, their family and many
named acquaintances. Every relation (pets, work, home, food, health, music, travel, possessions,
plans, dates, ...) recurs across people, so "my sister's dog" competes with "my dog" and with
"Lea Novak's dog". Some facts are later overridden ("I moved to Porto" after "I live in Lyon"); the
question about them lists the new value as its keyword and the old one as forbidden. Questions are
paraphrases that share few words with the fact.

Splits: every template, entity value and person name belongs to either the `train` or the
`heldout` split (a fixed alternation over the sorted pools). A session draws from one split only,
so a model trained on `train` sessions never sees a held-out template, value or name.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from ..session import Fact, Query, Session

SPLITS = ("train", "heldout")
T0 = 1_735_689_600  # 2025-01-01 00:00 UTC: sessions start here and run for about nine months
SPAN_S = 270 * 86400


@dataclass(frozen=True)
class Relation:
    name: str
    facts: tuple[str, ...]  # templates with {s} subject (e.g. "I" / "My sister"), {v} value, {has}/{is}/...
    questions: tuple[str, ...]  # templates with {o} owner (e.g. "my" / "my sister's"), {q} subject phrase
    values: tuple[str, ...]
    update: str | None = None  # a later fact that overrides the value, same placeholders


# Verb forms: {has} has/have, {is} is/am, {lives} lives/live, {works} works/work, ... chosen by subject.
R = Relation
RELATIONS: tuple[Relation, ...] = (
    R("dog", ("{s} {has} a dog named {v}.", "{o_cap} dog is called {v}.", "{s} adopted a puppy and named it {v}.",
              "We call {o} dog {v}."),
      ("What is {o} dog's name?", "What did {q} name the dog?", "How is {o} dog called?", "Which name does {o} pup answer to?"),
      ("Waffles", "Biscuit", "Pepper", "Juniper", "Mochi", "Rufus", "Tofu", "Comet", "Maple", "Ziggy", "Noodle",
       "Bramble", "Clementine", "Dottie", "Fennel", "Gizmo", "Hazel", "Kiwi", "Lentil", "Nacho")),
    R("cat", ("{s} {has} a cat called {v}.", "{o_cap} cat's name is {v}.", "{s} rescued a kitten named {v}.",
              "There is a cat at {o} place named {v}."),
      ("What is the name of {o} cat?", "What is {o} kitty called?", "Which name did {q} give the cat?",
       "How does {q} call the cat?"),
      ("Miso", "Pixel", "Saffron", "Olive", "Marble", "Sushi", "Cinder", "Paprika", "Velvet", "Nimbus", "Truffle",
       "Pistachio", "Sesame", "Quince", "Basil", "Tango", "Willow", "Cricket", "Figaro", "Luna")),
    R("city", ("{s} {lives} in {v}.", "{o_cap} home is in {v}.", "{s} {has} an apartment in {v}.",
               "These days {s_low} {lives} in {v}."),
      ("Where does {q} live?", "Which city is {o} home?", "In what city does {q} have a place?",
       "Where is {o} home these days?"),
      ("Lyon", "Porto", "Tallinn", "Ljubljana", "Valencia", "Krakow", "Antwerp", "Bergen", "Graz", "Bologna",
       "Seville", "Gdansk", "Utrecht", "Trieste", "Aarhus", "Cluj", "Bilbao", "Brno", "Malmo", "Nantes"),
      update="{s} just moved to {v}."),
    R("job", ("{s} {works} as a {v}.", "{o_cap} job is {v}.", "{s} {earns} a living as a {v}.",
              "By profession {s_low} {is} a {v}."),
      ("What does {q} do for a living?", "What is {o} profession?", "How does {q} make money?",
       "What kind of work does {q} do?"),
      ("pharmacist", "carpenter", "geologist", "translator", "paramedic", "librarian", "welder", "architect",
       "dentist", "cartographer", "beekeeper", "locksmith", "surveyor", "florist", "veterinarian", "actuary",
       "glassblower", "archivist", "optician", "sommelier"),
      update="{s} changed careers and now {works} as a {v}."),
    R("food", ("{o_cap} favourite dish is {v}.", "{s} could eat {v} every day.", "Nothing beats {v} for {s_obj}.",
               "{s} always {orders} {v}."),
      ("What food does {q} like most?", "Which meal is {o} favourite?", "What would {q} eat every day?",
       "What does {q} usually order?"),
      ("risotto", "ramen", "paella", "pierogi", "falafel", "goulash", "lasagna", "ceviche", "moussaka", "pho",
       "bibimbap", "couscous", "shakshuka", "gnocchi", "burritos", "dumplings", "tagine", "borscht", "curry",
       "empanadas")),
    R("allergy", ("{s} {is} allergic to {v}.", "{s} {gets} a bad reaction from {v}.",
                  "{s} must avoid {v} because of an allergy.", "{o_cap} doctor said {s_low} {is} allergic to {v}."),
      ("What is {q} allergic to?", "Which allergy does {q} have?", "What must {q} stay away from?",
       "What gives {qo} an allergic reaction?"),
      ("peanuts", "shellfish", "penicillin", "pollen", "latex", "sesame", "walnuts", "soy", "mustard", "kiwis",
       "strawberries", "wasps", "dust", "eggs", "celery", "lupin", "mangoes", "ibuprofen", "mould", "wool")),
    R("instrument", ("{s} {plays} the {v}.", "{s} {has} been learning the {v} for years.",
                     "{o_cap} instrument is the {v}.", "On weekends {s_low} {practises} the {v}."),
      ("Which instrument does {q} play?", "What does {q} practise on weekends?", "What instrument is {q} learning?",
       "What does {q} make music with?"),
      ("cello", "banjo", "oboe", "harp", "trombone", "ukulele", "accordion", "clarinet", "mandolin", "bassoon",
       "sitar", "tuba", "viola", "harmonica", "xylophone", "bagpipes", "piccolo", "marimba", "theremin", "lute")),
    R("car", ("{s} {drives} a {v}.", "{o_cap} car is a {v}.", "{s} bought a used {v}.",
              "{s} {commutes} in a {v}."),
      ("What car does {q} drive?", "Which vehicle does {q} own?", "What does {q} commute in?",
       "What brand is {o} car?"),
      ("Subaru", "Volvo", "Skoda", "Peugeot", "Mazda", "Fiat", "Renault", "Kia", "Hyundai", "Toyota", "Honda",
       "Citroen", "Dacia", "Seat", "Opel", "Lancia", "Saab", "Tesla", "Jeep", "Mini"),
      update="{s} sold the old car and now {drives} a {v}."),
    R("trip", ("{s} {plans} to visit {v} next year.", "{o_cap} next holiday is in {v}.",
               "{s} {is} saving up for a trip to {v}.", "{s} booked flights to {v}."),
      ("Which country is {q} going to visit?", "Where is {o} next holiday?", "What trip is {q} saving for?",
       "Where will {q} travel next?"),
      ("Iceland", "Peru", "Japan", "Morocco", "Vietnam", "Chile", "Norway", "Kenya", "Mongolia", "Portugal",
       "Georgia", "Jordan", "Namibia", "Bhutan", "Croatia", "Ecuador", "Laos", "Tunisia", "Slovenia", "Oman")),
    R("sport", ("{s} {plays} {v} twice a week.", "{o_cap} favourite sport is {v}.",
                "{s} joined a {v} club.", "{s} {trains} for {v} competitions."),
      ("Which sport does {q} play?", "What does {q} do for exercise?", "What club did {q} join?",
       "What does {q} compete in?"),
      ("badminton", "rugby", "fencing", "volleyball", "squash", "curling", "handball", "lacrosse", "archery",
       "rowing", "judo", "polo", "cricket", "softball", "climbing", "karate", "netball", "hockey", "bowling",
       "canoeing")),
    R("birthday", ("{o_cap} birthday is in {v}.", "{s} {was} born in {v}.", "{s} {celebrates} a birthday every {v}.",
                   "Every {v} {s_low} {throws} a birthday party."),
      ("When is {o} birthday?", "In which month was {q} born?", "When does {q} celebrate a birthday?",
       "What month is {o} birthday party?"),
      ("January", "February", "March", "April", "May", "June", "July", "August", "September", "October",
       "November", "December")),
    R("language", ("{s} {is} learning {v}.", "{s} started taking {v} lessons.", "{s} {speaks} a little {v}.",
                   "{s} {practises} {v} with an app."),
      ("Which language is {q} studying?", "What lessons did {q} start?", "What language does {q} speak a little?",
       "What is {q} practising with an app?"),
      ("Mandarin", "Portuguese", "Swahili", "Finnish", "Korean", "Hungarian", "Greek", "Turkish", "Polish",
       "Icelandic", "Hindi", "Tagalog", "Welsh", "Hebrew", "Dutch", "Czech", "Thai", "Arabic", "Basque", "Irish")),
    R("book", ("{o_cap} favourite novel is {v}.", "{s} {has} read {v} five times.", "{s} keeps rereading {v}.",
               "{s} {recommends} {v} to everyone."),
      ("Which book does {q} love most?", "What novel does {q} keep rereading?", "What book does {q} recommend?",
       "What is {o} favourite novel?"),
      ("Dune", "Middlemarch", "Beloved", "Ulysses", "Rebecca", "Emma", "Solaris", "Matilda", "Persuasion",
       "Frankenstein", "Dracula", "Kindred", "Atonement", "Stoner", "Neuromancer", "Pachinko", "Circe",
       "Lolita", "Possession", "Wolf Hall")),
    R("plant", ("{s} {grows} {v} on the balcony.", "There are {v} in {o} garden.", "{s} {is} proud of the {v}.",
                "{s} {waters} the {v} every morning."),
      ("What does {q} grow at home?", "What is in {o} garden?", "What plants is {q} proud of?",
       "What does {q} water every morning?"),
      ("tomatoes", "orchids", "cacti", "tulips", "peppers", "ferns", "bonsai", "sunflowers", "lavender", "roses",
       "strawberries", "succulents", "dahlias", "chillies", "peonies", "herbs", "lilies", "begonias", "figs",
       "zucchini")),
)

FAMILY = ("my sister", "my brother", "my mother", "my father", "my daughter", "my son", "my wife", "my husband",
          "my cousin", "my aunt", "my uncle", "my grandmother", "my best friend", "my neighbour", "my boss",
          "my roommate")
FIRST = ("Lea", "Omar", "Ines", "Tomas", "Priya", "Kofi", "Mila", "Arjun", "Nora", "Felix", "Yara", "Lukas", "Amara",
         "Jonas", "Sofia", "Dmitri", "Hana", "Mateo", "Zoe", "Rafael", "Ingrid", "Kenji", "Alma", "Bruno", "Chiara",
         "Emil", "Farah", "Gustav", "Ida", "Jorge", "Kaia", "Leon", "Maren", "Nils", "Olga", "Pablo", "Rosa", "Sami",
         "Tilda", "Umar", "Vera", "Wim", "Xenia", "Yusuf", "Zora", "Anton", "Beata", "Cyril", "Dagny", "Elio")
LAST = ("Novak", "Haddad", "Silva", "Berg", "Okafor", "Rossi", "Kowalski", "Tanaka", "Moreau", "Jensen", "Costa",
        "Ivanova", "Fischer", "Mendes", "Larsen", "Petrov", "Nakamura", "Dubois", "Horvat", "Quinn", "Adler",
        "Brandt", "Castillo", "Duarte", "Eriksen", "Ferreira", "Garcia", "Holm", "Iqbal", "Jovanovic")


def _split(items, split: str) -> tuple:
    """Every second item of the sorted pool: indices 0, 2, 4... train, 1, 3, 5... held out."""
    ordered = sorted(items)
    return tuple(ordered[SPLITS.index(split)::2])


@dataclass(frozen=True)
class _Subject:
    subject: str  # "I", "My sister", "Lea Novak"
    owner: str  # "my", "my sister's", "Lea Novak's"
    obj: str  # "me", "my sister", "Lea Novak"
    question: str  # how a question names them: "I", "my sister", "Lea Novak"

    @property
    def first_person(self) -> bool:
        return self.subject == "I"


def _subjects(split: str, rng: random.Random, n_people: int) -> list[_Subject]:
    me = _Subject("I", "my", "me", "I")
    family = [_Subject(f.capitalize(), f"{f}'s", f, f) for f in _split(FAMILY, split)]
    names = [f"{a} {b}" for a in _split(FIRST, split) for b in _split(LAST, split)]
    rng.shuffle(names)
    relatives = [f"{n}'s {f.removeprefix('my ')}" for n in names for f in _split(FAMILY, split)]
    rng.shuffle(relatives)
    people = [_Subject(n, f"{n}'s", n, n) for n in (names + relatives)[:n_people]]
    return [me, *family, *people]


_VERBS = {"has": ("have", "has"), "is": ("am", "is"), "was": ("was", "was"), "lives": ("live", "lives"),
          "works": ("work", "works"), "earns": ("earn", "earns"), "orders": ("order", "orders"),
          "gets": ("get", "gets"), "plays": ("play", "plays"), "practises": ("practise", "practises"),
          "drives": ("drive", "drives"), "commutes": ("commute", "commutes"), "plans": ("plan", "plans"),
          "trains": ("train", "trains"), "celebrates": ("celebrate", "celebrates"), "throws": ("throw", "throws"),
          "speaks": ("speak", "speaks"), "recommends": ("recommend", "recommends"), "grows": ("grow", "grows"),
          "waters": ("water", "waters")}


def _fill(template: str, s: _Subject, value: str) -> str:
    first = s.first_person
    words = {k: forms[0 if first else 1] for k, forms in _VERBS.items()}
    owner_cap = s.owner[0].upper() + s.owner[1:]
    text = template.format(s=s.subject, s_low="I" if first else s.obj, s_obj=s.obj, o=s.owner, o_cap=owner_cap,
                           v=value, **words)
    return text[0].upper() + text[1:]


def _question(template: str, s: _Subject) -> str:
    if s.first_person:  # "What does I do" -> "What do I do"; "Where does I live" -> "Where do I live"
        template = template.replace("does {q}", "do {q}").replace("is {q}", "am {q}")
    text = template.format(o=s.owner, q=s.question, qo=s.obj)
    return text[0].upper() + text[1:]


def generate_session(n: int, *, seed: int = 0, split: str = "heldout", n_queries: int = 20,
                     update_share: float = 0.25) -> Session:
    """A session of `n` facts (10 <= n <= 10,000) and up to `n_queries` questions about them.

    Args:
        n: number of facts, updates included.
        seed: equal seeds give equal sessions.
        split: "train" or "heldout": which templates, values and names to draw from.
        n_queries: questions asked, each about one (subject, relation) the session states.
        update_share: share of questions whose fact is later overridden (the answer must name the
            new value and not the old one).

    Returns:
        A `Session`; facts carry ids, timestamps over nine months and one session id per day.
    """
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}")
    if not 10 <= n <= 10_000:
        raise ValueError("n must be between 10 and 10,000")
    rng = random.Random(f"{seed}:{split}:{n}")
    relations = list(RELATIONS)
    n_people = max(0, n // len(relations) + 1)
    subjects = _subjects(split, rng, n_people)
    pools = {r.name: _split(r.values, split) for r in relations}
    fact_tpl = {r.name: _split(r.facts, split) for r in relations}
    q_tpl = {r.name: _split(r.questions, split) for r in relations}
    # (subject, relation) slots: the user and the family first, so questions are about them
    slots = [(s, r) for s in subjects for r in relations]
    head = [sl for sl in slots if sl[0].first_person or sl[0].subject.lower() in FAMILY]
    tail = [sl for sl in slots if sl not in head]
    rng.shuffle(head)
    rng.shuffle(tail)
    n_q = min(n_queries, max(1, n // 2))
    n_upd = int(round(n_q * update_share)) if n >= 20 else 0
    updatable = [sl for sl in head if sl[1].update][:n_upd]
    asked = updatable + [sl for sl in head if sl not in updatable][: n_q - len(updatable)]
    rng.shuffle(asked)
    chosen = (asked + [sl for sl in head if sl not in asked] + tail)[: n - len(updatable)]
    facts: list[dict] = []
    queries: list[Query] = []
    value_of: dict[tuple[str, str], str] = {}
    for s, r in chosen:
        v = rng.choice(pools[r.name])
        value_of[(s.subject, r.name)] = v
        facts.append({"text": _fill(rng.choice(fact_tpl[r.name]), s, v), "key": (s.subject, r.name)})
    rng.shuffle(facts)
    for s, r in updatable:  # overriding facts come after the originals
        old = value_of[(s.subject, r.name)]
        new = rng.choice([v for v in pools[r.name] if v != old])
        value_of[(s.subject, r.name)] = new
        facts.append({"text": _fill(r.update, s, new), "key": (s.subject, r.name), "old": old})
    ts = sorted(T0 + rng.randrange(SPAN_S) for _ in facts)
    out_facts = []
    fact_ids: dict[tuple[str, str], list[str]] = {}
    for i, (f, t) in enumerate(zip(facts, ts)):
        fid = f"f{i + 1:05d}"
        fact_ids.setdefault(f["key"], []).append(fid)
        day = (t - T0) // 86400
        out_facts.append(Fact(id=fid, text=f["text"], ts=float(t), session=f"day-{day:03d}"))
    old_values = {f["key"]: f["old"] for f in facts if "old" in f}
    for s, r in asked:
        key = (s.subject, r.name)
        if key not in value_of:
            continue
        forbidden = [old_values[key]] if key in old_values else []
        queries.append(Query(text=_question(rng.choice(q_tpl[r.name]), s), keywords=[value_of[key]],
                             fact_ids=fact_ids[key][-1:], forbidden=forbidden))
    return Session(out_facts, queries)
