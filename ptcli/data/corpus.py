"""Generate the embedded default corpus: seeded children's stories that know their own entropy."""

# Why generated: no download, licence or package data; and since every random choice is counted, the
# corpus knows its true entropy rate, the floor under any model's loss, to judge training runs against.
# A document is one story on one line: sentences separated by single spaces, ASCII only, no trailing
# space or separator (the packing code adds separators between documents).
#
# Why the text determines the choices (injectivity), so that counted bits = information in the text:
#   * The story is written strictly left to right, each choice just before its outcome; a hidden choice
#     (a name's gender, a hazard's rescue) is a function of words that are written.
#   * Within one choice the alternatives are distinct, and the first word where they differ is followed
#     by a space or punctuation in every template, so none can pass for another or for a prefix of it.
#   * After an empty or optional part, the words that can follow are disjoint from the words it could
#     have produced (sizes vs colours vs toys; scene sentences vs the sentence after them).
#   * Only the hero is ever called he/she/his/her, so pronouns never make two references collide.
# By induction, a reader replaying the grammar recovers every choice from the text; the tests check it
# exhaustively on sample stories. Stories are independent and the packing code marks their ends, so
# the corpus's bits are the sum of its stories' bits.

from __future__ import annotations

import functools
import math
import random
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

GIRLS = ("Lily", "Mia", "Anna", "Lucy", "Emma", "Zoe", "Amy", "Sara", "Ella", "Rose", "Kim", "Sue",
         "Lena", "Nora", "Ruby", "Ivy", "Maya", "Jenny", "Kate", "Nina")
BOYS = ("Tim", "Tom", "Ben", "Max", "Sam", "Jack", "Leo", "Finn", "Joe", "Bob", "Dan", "Ned",
        "Paul", "Luke", "Noah", "Adam", "Ryan", "Carl", "Eli", "Hugo")
NAMES = GIRLS + BOYS
HERO_ADJS = ("kind", "happy", "curious", "brave", "shy", "clever", "cheerful", "gentle", "sweet", "busy")
HOMES = ("village", "town", "house", "cottage", "farm")
ACTIVITIES = ("play outside", "draw pictures", "sing songs", "read books", "dance", "climb trees",
              "look at the clouds", "pick flowers", "play in the sand", "build towers with blocks",
              "ride a bike", "splash in puddles", "help in the garden", "chase butterflies")
TIMES = ("One day", "One sunny day", "One morning", "One afternoon", "One warm day", "One windy day")
PLACES = ("park", "beach", "forest", "garden", "farm", "lake", "zoo", "hill", "playground", "meadow",
          "river", "woods")
FAMILY = ("mom", "dad", "grandma", "grandpa")
# sizes, colours and toys are disjoint word sets, so the empty size cannot be confused with a colour;
# no vowel-initial words after "a", so it never needs to become "an"
SIZES = ("", "big ", "small ", "shiny ", "new ", "soft ")
COLORS = ("red", "blue", "green", "yellow", "pink", "purple", "brown", "white")
TOYS = ("ball", "kite", "doll", "car", "boat", "hat", "drum", "truck", "train", "robot", "balloon", "puzzle")
LOVES = ("{He} loved it very much.", "It was {his} favorite toy.", "{He} took it everywhere.")
ANIMAL_ADJS = ("little", "fluffy", "tiny", "funny", "friendly", "sleepy", "hungry", "silly")
ANIMALS = ("dog", "cat", "bird", "duck", "frog", "bunny", "fox", "bear", "mouse", "owl", "pig", "squirrel")
# where a toy gets stuck -> how the friend gets it back (a function of the visible words: 0 bits); dicts
# keep insertion order, so tuple(HAZARDS) has no hash-dependent ordering
HAZARDS = {"in a tall tree": "climbed up the tree", "in a deep hole": "reached into the hole",
           "under a big rock": "pushed the rock away", "in a thick bush": "crawled into the bush",
           "on a high roof": "found a long stick", "in the mud": "pulled it out of the mud"}
SAD = ("was very sad", "started to cry", "did not know what to do", "sat down and cried")
ASKS = ("Why are you sad?", "What is wrong?", "Are you okay?")
PROMISES = ("I will help you!", "Don't worry, I can help!", "I can get it for you!")
HOW_LONG = ("until the sun went down", "all afternoon", "for a long time", "all day")
# what to invite someone to do -> what they then did
GAMES = {"play tag": "played tag", "look for bugs": "looked for bugs", "throw a ball": "threw a ball",
         "play hide and seek": "played hide and seek", "build a sand castle": "built a sand castle",
         "jump over rocks": "jumped over rocks", "feed the ducks": "fed the ducks", "race": "raced"}
ALONE = ("sitting all alone", "crying under a tree", "looking for a friend")
YESES = ("Yes, I would love to!", "Okay!", "That sounds fun!")
REFUSED = ("looked very sad", "was sad and sat down", "began to cry")
RELENTS = ("thought about it", "felt bad", "did not like to see a friend sad")
OFFERS = ("I am sorry.", "You can have a turn.", "Here you go.")
# scene sentences (see scenes() in _tell), one kind each, slots filled from these lists
SCENES = ("see", "sky", "move", "find", "glad", "hear", "smell")
SIGHTS = ("butterflies", "flowers", "birds", "bugs", "ducks", "leaves", "bees", "ants")
PRETTY = ("pretty", "tiny", "colorful", "little", "big")
THINGS = {"sky": ("blue", "clear", "bright"), "sun": ("warm", "bright", "hot"),
          "grass": ("green", "soft", "tall"), "wind": ("cool", "gentle", "strong"),
          "air": ("fresh", "cool", "sweet")}
MOVES = ("ran", "skipped", "hopped", "walked")
LANDMARKS = ("big tree", "old bench", "little bridge", "tall slide", "small pond", "red barn")
FINDS = ("stone", "shell", "leaf", "feather", "stick", "pinecone")
GLAD = ("laughed and laughed", "sang a happy song", "clapped {his} hands", "jumped up and down",
        "danced in a circle")
SOUNDS = ("a bird sing", "the wind blow", "a dog bark", "the leaves rustle", "a frog croak", "the bees buzz")
SMELLS = ("sweet flowers", "fresh air", "green grass", "ripe apples", "warm sand")
NOISES = ("loud", "strange", "funny", "soft")
NOISE_PLACES = ("outside", "under the bed", "in the kitchen", "behind the door")
REASONS = ("hungry", "lost", "cold", "lonely")
FOODS = ("milk", "cookies", "bread", "soup")
BAKES = ("a cake", "a pie", "some cookies", "some muffins", "a big pizza")
STEPS = ("mix the flour", "crack the eggs", "pour the milk", "stir the dough")
EAT_WHERE = ("together", "at the table", "in the garden")


class _Chooser:
    """Draws every random choice from one ``random.Random`` and adds up its surprisal in bits."""

    __slots__ = ("_rng", "bits")

    def __init__(self, rng: random.Random):
        self._rng = rng
        self.bits = 0.0

    def __call__(self, options: Sequence, weights: Sequence[int] | None = None):
        n = len(options)
        if n == 1:
            return options[0]  # a forced choice carries no information
        # randrange is exact and stable across platforms and Python versions (random() * n is not exact)
        if weights is None:
            self.bits += math.log2(n)
            return options[self._rng.randrange(n)]
        total = sum(weights)
        r = self._rng.randrange(total)
        for option, w in zip(options, weights, strict=True):
            if r < w:
                self.bits += math.log2(total) - math.log2(w)
                return option
            r -= w
        raise AssertionError("unreachable: r < total")


class _Friend:
    """The hero's friend, a named child or an animal, who is never called by a pronoun."""

    def __init__(self, pick, say, hero: str, his: str, pal: bool):
        """Choose the friend and write its first mention: "a boy named Tom" (``pal``: "his friend Tom")."""
        if pick(("child", "animal")) == "child":
            # filtering a tuple keeps its order, so the list (and the draw) is deterministic
            name = pick(tuple(n for n in NAMES if n != hero))
            say(f"{his} friend {name}" if pal else f"a {'girl' if name in GIRLS else 'boy'} named {name}")
            self.subj = self.Subj = self.address = name
        else:
            adj = pick(ANIMAL_ADJS)
            say(f"a {adj} ")
            animal = pick(ANIMALS)
            say(animal)
            self.subj, self.Subj, self.address = f"the {animal}", f"The {animal}", f"{adj} {animal}"


def _tell(pick, out: list[str]) -> None:
    """Append one story to ``out``, piece by piece, asking ``pick(options[, weights])`` for every choice.

    Append-only, and every choice is written before the next is made, so the text so far always shows the
    choices so far: that lets the tests search all choice sequences for one text quickly.
    """
    say = out.append

    def line(*parts) -> None:
        # a tuple is a choice, written the moment it is made; strings are written as they are
        for part in parts:
            say(pick(part) if isinstance(part, tuple) else part)

    form = pick(("little", "adj", "was", "home"))
    if form == "little":
        say("Once upon a time, there was a little ")
    elif form == "adj":
        line("There once was a ", HERO_ADJS, " ")
    elif form == "home":
        line("Once upon a time, in a small ", HOMES, ", there lived a ")
    name = pick(NAMES)
    kind, he, his, him = ("girl", "she", "her", "her") if name in GIRLS else ("boy", "he", "his", "him")
    He, His = he.capitalize(), his.capitalize()
    hero = (name, He)  # the two ways a sentence may start with the hero
    if form == "was":
        line(name, " was a ", HERO_ADJS, f" little {kind}.")
    else:
        say(f"{kind} named {name}.")
    used: list[str] = []  # scene kinds told so far (a list, not a set: no hash-dependent order)

    def toy() -> str:
        line(" ", hero, " had a ", SIZES, COLORS, " ")
        thing = pick(TOYS)
        line(f"{thing}. ", tuple(s.format(He=He, his=his) for s in LOVES))
        return thing

    def scenes() -> None:
        # 1-3 sentences of scenery, each starting with the hero or "The", which no sentence that follows
        # a call can start with, so the text shows where the scenes end
        for _ in range(pick((1, 2, 3), (3, 3, 2))):
            # no kind twice in a story; the kinds used so far are visible, so this stays injective
            kind_of = pick(tuple(k for k in SCENES if k not in used))
            used.append(kind_of)
            if kind_of == "see":
                line(" ", hero, " saw ", ("some", "many", "lots of"), " ", PRETTY, " ", SIGHTS, ".")
            elif kind_of == "hear":
                line(" ", hero, " heard ", SOUNDS, ".")
            elif kind_of == "smell":
                line(" ", hero, " smelled the ", SMELLS, ".")
            elif kind_of == "sky":
                thing = pick(tuple(THINGS))
                line(f" The {thing} was ", THINGS[thing], ".")
            elif kind_of == "move":
                line(" ", hero, " ", MOVES, " ", ("to", "around", "past"), " the ", LANDMARKS, ".")
            elif kind_of == "find":
                line(" ", hero, " found a ", ("shiny", "smooth", "tiny"), " ", FINDS,
                     (f" and put it in {his} pocket.", " and smiled."))
            else:
                line(" ", hero, " ", tuple(g.format(his=his) for g in GLAD), ".")

    plot = pick(("lost", "friend", "share", "night", "bake"), (3, 3, 2, 2, 2))
    if plot == "lost":
        thing = toy()
        line(" ", TIMES, f", {name} ")
        if pick(("took", "went")) == "took":
            line(f"took the {thing} to the ", PLACES, ".")
        else:
            line("went to the ", PLACES, f" with {his} {thing}.")
        line(" ", hero, " played with it ", HOW_LONG, ".")
        scenes()
        where = pick(tuple(HAZARDS))
        line((f" Suddenly, the {thing} got stuck {where}.", f" Oh no! The {thing} got stuck {where}.",
              f" Then the wind blew, and the {thing} got stuck {where}."))
        line(f" {name} ", SAD, ". ", ("Just then,", "Then", "Soon,"), " ")
        friend = _Friend(pick, say, name, his, pal=False)
        line((" came by.", f" walked up to {him}."), ' "', ASKS, f'" asked {friend.subj}.')
        line((f' "My {thing} is stuck {where}," said {name}.',
              f' {name} said, "My {thing} is stuck {where}."'))
        line(' "', PROMISES, f'" said {friend.subj}.')
        line((f" {friend.Subj} {HAZARDS[where]} and got the {thing} back.",
              f" {friend.Subj} {HAZARDS[where]}. Soon the {thing} was free!"))
        line((f' {name} was so happy. "Thank you, {friend.address}!" {he} said.',
              f' "Thank you!" said {name} with a big smile.', f" {name} gave {friend.subj} a big hug."))
    elif plot == "friend":
        line(f" {He} loved to ", ACTIVITIES, ".")
        line(" ", TIMES, f", {name} went to the ", PLACES)
        line(("",) + tuple(f" with {his} {f}" for f in FAMILY), ".")
        scenes()
        line(" ", ("Then", "Soon", "After a while"), f", {he} saw ")
        friend = _Friend(pick, say, name, his, pal=False)
        line(f". {friend.Subj} was ", ALONE, ".")
        invite = pick(tuple(GAMES))
        line((f' {name} walked up and said, "Hello! My name is {name}. Do you want to {invite} with me?"',
              f' "Hi! Do you want to {invite}?" asked {name}.', f' {name} said, "Hello! Let\'s {invite}!"'))
        line(f" {friend.Subj} ", ("smiled", "nodded", "jumped up"), ' and said, "', YESES, '"')
        line(f" They {GAMES[invite]} ", HOW_LONG, ".")
    elif plot == "share":
        thing = toy()
        line(" ", TIMES, ", ")
        friend = _Friend(pick, say, name, his, pal=True)
        say(f" came to play with {him}.")
        say(f' {friend.Subj} saw the {thing} and said, "Can I play with your {thing}?"')
        line((f' "No! It is my {thing}!" said {name}.',
              f' {name} held the {thing} tight and said, "No, it is mine!"'))
        line(f" {friend.Subj} ", REFUSED, f". {name} ", RELENTS, ".")
        line(f' {He} said, "', OFFERS, ' We can play with it together."')
        line(f" They played with the {thing} ", HOW_LONG, ". It was so much fun!")
    elif plot == "night":
        line(f" {He} loved to ", ACTIVITIES, ".")
        line(f" One night, {name} heard a ", NOISES, " noise ", NOISE_PLACES, ".")
        line(f" {He} was ", ("scared", "a little scared", "very scared"), ".")
        line(f" {He} ", ("got up", f"took {his} flashlight", f"held {his} blanket"), " and went to look.")
        say(" It was just ")
        friend = _Friend(pick, say, name, his, pal=True)
        line(f'! "You scared me!" said {name}. {friend.Subj} said, "I am sorry. I was ', REASONS, '."')
        line(f" {name} gave {friend.subj} some ", FOODS, " and a warm hug.")
    else:
        line(" ", TIMES, f", {name} and {his} ")
        family = pick(FAMILY)
        line(f"{family} made ", BAKES, ".")
        line(" ", hero, " helped ", STEPS, f", and {his} {family} helped ", STEPS, ".")
        line(" They put it in the oven and waited. ", ("Soon", "After a while"),
             ", the kitchen smelled so good! Then ")
        friend = _Friend(pick, say, name, his, pal=True)
        line(" came to the door. ", ('"Do you want some?" asked', '"Would you like some?" asked',
                                     '"Come and eat with us!" said'), f" {name}.")
        line(f' "Yes, please!" said {friend.subj}. They ate it ', EAT_WHERE, ".")

    if plot in ("lost", "friend", "share"):
        scenes()
    # no ending starts with the hero or "The", so the scenes before it end where the text shows
    line((f" From that day on, {name} and {friend.subj} were best friends.",
          f" After that, {name} and {friend.subj} played together every day.",
          f" That night, {name} went to sleep with a big smile.", " It was the best day ever."))
    say(pick(("", " The end.", f" {His} heart was full of joy."), (4, 1, 1)))


@dataclass(frozen=True)
class Corpus:
    """Generated stories and the exact information content of the choices that made them."""

    documents: list[str]  # one story per document, no trailing separator
    bits: float  # total -log2 probability of all choices made
    chars: int  # total characters over documents (sum(len(d)))

    @property
    def bits_per_char(self) -> float:
        """Empirical entropy rate of the text: the best loss any model could reach, in bits per character."""
        return self.bits / self.chars if self.chars else 0.0


def iter_stories(seed: int) -> Iterator[tuple[str, float]]:
    """Endless stream of ``(story, bits)``: each story and the -log2 probability of the choices behind it.

    One ``random.Random(seed)`` drives everything, so a seed gives byte-identical stories on any platform.
    """
    rng = random.Random(seed)
    while True:
        pick, out = _Chooser(rng), []
        _tell(pick, out)
        yield "".join(out), pick.bits


# One run reads the embedded corpus up to four times (tokenizer training reads twice, packing, the entropy
# report): generate it once per process.
@functools.lru_cache(maxsize=2)
def generate_corpus(seed: int = 0, target_bytes: int = 3_000_000) -> Corpus:
    """Stories from ``iter_stories(seed)`` until their total size reaches ``target_bytes``.

    Sizes count characters, which are bytes here (ASCII). The last story is kept whole, so the total
    overshoots the target by less than one story.
    """
    documents: list[str] = []
    bits, chars = 0.0, 0
    stories = iter_stories(seed)
    while chars < target_bytes:
        story, story_bits = next(stories)
        documents.append(story)
        bits += story_bits
        chars += len(story)
    return Corpus(documents, bits, chars)
