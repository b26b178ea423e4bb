"""The offline extractive note writer (`NoteWriter`): the router's last provider, no key and
no network.

It fills the same `DiaryNote` schema as the LLM providers, from the transcript alone, with small
explainable heuristics (regular expressions and word counts, no model):

- sentences are cut from the joined segment texts and keep the time range of the words or
  segments they came from;
- each sentence is scored by the average TF-IDF-like weight of its words (sentences as
  documents), with a bonus for the opening sentences and for those naming people, places or
  feelings; sentences are picked greedily, words already picked counting half, and the best
  form the summary and the highlights, in spoken order; to-do sentences come last;
- people and places are capitalised words that are not at the start of a sentence nor common
  words, months or days; the word before them (met, with, in, at, from…) or after them
  (Street, Road…) says which is which;
- the date, due dates, action items (I need to…, remember to…, enumerations after "remember
  three things") and mood (a feeling word said about the speaker, or said twice) come from
  fixed patterns and a small lexicon; tags are frequent noun-like words.

The output depends only on the transcript and the arguments: no clock, no randomness, no set
iteration order, so the same input gives a byte-identical note.
"""

from __future__ import annotations

import logging
import math
import re
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import date, datetime, timedelta

from audiary.domain.notes import ActionItem, DiaryNote, Statement, TimeRange
from audiary.domain.transcript import Segment, Transcript
from audiary.ports import NoteWriter, Usage

__all__ = ["EXTRACTIVE_VERSION", "ExtractiveNoteWriter", "write_extractive"]

logger = logging.getLogger(__name__)

EXTRACTIVE_VERSION = "extractive-1"

_TITLE_MAX = 80
_MAX_SENTENCE_WORDS = 60  # unpunctuated transcripts are cut at segment ends beyond this
_OPENING_SENTENCES = 3  # where a diary entry says which day it is about
_MAX_TAGS = 6
_MIN_TAGS = 3
_MAX_HIGHLIGHTS = 6

# --- word lists ------------------------------------------------------------------------------


def _words(text: str) -> frozenset[str]:
    return frozenset(text.split())


_MONTHS = {
    name: number
    for number, name in enumerate(
        (
            "january", "february", "march", "april", "may", "june", "july", "august",
            "september", "october", "november", "december",
        ),
        start=1,
    )
}
_WEEKDAYS = {
    name: number
    for number, name in enumerate(
        ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")
    )
}
_UNITS = ("one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
_CARDINALS = {
    **{name: number for number, name in enumerate(_UNITS, start=1)},
    **{"ten": 10, "eleven": 11, "twelve": 12, "a": 1},
}
_ORDINAL_UNITS = (
    "first", "second", "third", "fourth", "fifth", "sixth", "seventh", "eighth", "ninth",
)
_ORDINALS: dict[str, int] = {
    **{name: number for number, name in enumerate(_ORDINAL_UNITS, start=1)},
    **{
        name: number
        for number, name in enumerate(
            (
                "tenth", "eleventh", "twelfth", "thirteenth", "fourteenth", "fifteenth",
                "sixteenth", "seventeenth", "eighteenth", "nineteenth", "twentieth",
            ),
            start=10,
        )
    },
    "thirtieth": 30,
    **{f"twenty{sep}{unit}": 20 + n for n, unit in enumerate(_ORDINAL_UNITS, 1) for sep in "- "},
    **{f"thirty{sep}first": 31 for sep in "- "},
}

_STOPWORDS = _words(
    """
    a about above after again against all almost already also although always am among an and
    another any anyone anything anyway are around as at away back be became because become been
    before being below besides better between both but by can cannot could did do does doing done
    down during each either else enough even ever every everyone everything few for from further
    had has have having he her here hers herself him himself his how however i if in into is it
    its itself just least less let like made make makes making many maybe me might mine more most
    much must my myself near neither never next no nobody none nor not nothing now of off often
    on once one only onto or other others otherwise our ours ourselves out over own perhaps
    quite rather really said same say says see seem seemed seems shall she should since so some
    somebody someone something sometimes still such than that the their theirs them themselves
    then there these they thing things this those though through thus till to too toward towards
    under unless until up upon us very via was we well went were what whatever when whenever where
    whether which while who whom whose why will with within without would yet you your yours
    yourself yourselves also okay ok yes yeah oh uh um hmm hi hello thanks thank please
    get gets got getting go goes going gone come comes came coming take takes took taken give
    gives gave given know knows knew known think thinks thought want wants wanted need needs
    needed try tried tries put puts keep kept tell told ask asked asks call called feel felt
    look looked looks seemed lot lots bit way ways day days time times today tomorrow yesterday
    tonight morning afternoon evening night week weekend month year years good great new old
    little big small whole last kind sort stuff able sure right left along across behind beside
    beyond past except despite unlike per hour hours minute minutes weeks months
    don't didn't doesn't isn't wasn't aren't weren't can't couldn't won't wouldn't shouldn't
    i'm i've i'll i'd it's that's there's he's she's we're they're you're let's we've we'll
    """
)
_STOPWORDS = _STOPWORDS.union(_MONTHS, _WEEKDAYS, _CARDINALS, _ORDINALS)

# Capitalised words that are not names even in the middle of a sentence.
_NOT_NAMES = _STOPWORDS | _words(
    """
    i mr mrs ms dr mum mom dad god christmas easter halloween thanksgiving
    """
)
_TITLES = frozenset({"mr", "mrs", "ms", "dr", "doctor", "professor", "prof", "aunt", "uncle"})

_PLACE_BEFORE = frozenset(
    {
        "in", "at", "from", "near", "into", "around", "across", "through", "toward", "towards",
        "outside", "inside", "to",
    }
)
# After these "to X" is no destination: talked to Sarah, next to Daniel, thanks to Anna.
_TALK_VERBS = frozenset(
    {
        "talk", "talked", "talking", "spoke", "speak", "speaking", "said", "say", "wrote",
        "write", "listened", "listen", "explained", "introduced", "married", "sent", "send",
        "gave", "give", "lent", "showed", "show", "sang", "read", "replied", "reply", "next",
        "close", "closer", "according", "thanks",
    }
)
_PERSON_BEFORE = frozenset(
    {
        "met", "meet", "meeting", "called", "call", "calling", "phoned", "phone", "with",
        "told", "tell", "asked", "ask", "saw", "see", "seeing", "emailed", "email", "texted",
        "text", "thanked", "thank", "hugged", "visited", "visit", "helped", "help",
        "married", "invited", "invite", "joined", "join", "dear",
    }
)
_PERSON_AFTER = frozenset(
    {
        "said", "says", "told", "tells", "asked", "asks", "thinks", "thought", "called",
        "came", "comes", "went", "presented", "explained", "suggested", "mentioned", "agreed",
        "wants", "wanted", "laughed", "smiled", "arrived", "sent", "wrote", "gave", "showed",
        "helped",
    }
)
# Last words that make a name a place: Elm Street, Central Park, Union Station.
_PLACE_SUFFIXES = _words(
    """
    street st road rd avenue ave lane drive boulevard square park station airport bridge river
    lake beach bay mountain mountains hill hills valley island islands city town village county
    market mall center centre hospital university college museum cathedral church castle hotel
    cafe café harbour harbor port
    """
)
# Nationalities and other group names (Americans, Italians, Chinese, English): no person, no
# place. Five letters or fewer are spared so that surnames like Evans stay names.
_GROUP_NAME = re.compile(r"^[A-Z][a-z]{2,}(?:ans|ese|ish)$")

_POSITIVE = _words(
    """
    relieved grateful thankful happy glad calm relaxed content excited proud hopeful cheerful
    joyful peaceful productive optimistic energized energised motivated satisfied delighted
    rested inspired confident loved
    """
)
_NEGATIVE = _words(
    """
    stressed tired exhausted anxious worried sad angry frustrated upset lonely overwhelmed
    nervous annoyed disappointed bored scared afraid miserable sick depressed guilty ashamed
    restless irritated hopeless drained
    """
)
_MOOD_WORDS = _POSITIVE | _NEGATIVE
# A mood word about the speaker ("I felt relieved") counts more than one about a thing.
_SELF_MOOD = re.compile(
    r"(?:\b(?:i|we)(?:'m|'re|'ve\s+been|\s+am|\s+are|\s+was|\s+were|\s+feel|\s+felt"
    r"|\s+have\s+been|\s+had\s+been|\s+get|\s+got|\s+became)(?:\s+feeling)?|\bfeeling|\bfelt)"
    r"\s+(?:so\s+|very\s+|really\s+|quite\s+|pretty\s+|a\s+bit\s+|a\s+little\s+"
    r"|extremely\s+|too\s+|incredibly\s+)?$",
    re.IGNORECASE,
)
_NEGATION = frozenset({"not", "never", "no", "hardly", "barely"})

# Words after which the next one is probably a noun: the tag candidates.
_DETERMINERS = _words(
    """
    the a an my your his her our their its this that these those some two three four five few
    several every each any no another
    """
)

# Stopwords that may stand between a determiner and its noun: "the first books", "the new budget".
_NOUN_MODIFIERS = _words("good great new old little big small whole last next").union(
    _CARDINALS, _ORDINALS
)

# --- patterns --------------------------------------------------------------------------------

_RIGHT_QUOTE = "\u2019"  # Whisper writes some apostrophes as this
_WORD = re.compile(r"[A-Za-z]+(?:['\u2019][A-Za-z]+)*")
_SENTENCE_END = re.compile(r"[.!?]+[\"')\]]*(?=\s|$)")
# No sentence ends after a title; after these others only when the next word is capitalised.
_TITLE_ABBREVIATION = re.compile(r"\b(?:mr|mrs|ms|dr|prof|st)\.$", re.IGNORECASE)
_ABBREVIATION = re.compile(r"\b(?:i\.e|e\.g|a\.m|p\.m|etc|vs|cf|approx)\.$", re.IGNORECASE)
_CAPITALISED = r"[A-Z][a-z]+(?:['\u2019-][A-Za-z]+)*"
_NAME_RUN = re.compile(rf"\b{_CAPITALISED}(?:\s+{_CAPITALISED})*")

_DAY_WORDS = "|".join(sorted((re.escape(w) for w in _ORDINALS), key=len, reverse=True))
_DAY = rf"(?P<day>\d{{1,2}}(?:st|nd|rd|th)?|{_DAY_WORDS})"
_MONTH = rf"(?P<month>{'|'.join(_MONTHS)})"
_YEAR = r"(?:,?\s+(?P<year>\d{4}))?"
_DATE_PATTERNS = (
    re.compile(r"\b(?P<year>\d{4})-(?P<month>\d{1,2})-(?P<day>\d{1,2})\b"),
    re.compile(rf"\b(?:the\s+)?{_DAY}\s+(?:of\s+)?{_MONTH}\b{_YEAR}", re.IGNORECASE),
    re.compile(rf"\b{_MONTH}\s+(?:the\s+)?{_DAY}\b{_YEAR}", re.IGNORECASE),
)
_WEEKDAY = rf"(?P<weekday>{'|'.join(_WEEKDAYS)})"
_NUMBER = rf"(?P<n>\d+|{'|'.join(sorted(_CARDINALS, key=len, reverse=True))})"
# Relative expressions for due dates, each with how it resolves; the optional leading
# preposition is part of the match so that removing it leaves a clean imperative.
_DUE_PREP = r"(?:(?:by|on|before|until|till|for)\s+)?"
_RELATIVE_DUE = (
    ("after_tomorrow", re.compile(rf"\b{_DUE_PREP}the\s+day\s+after\s+tomorrow\b", re.I)),
    (
        "tomorrow",
        re.compile(rf"\b{_DUE_PREP}tomorrow(?:\s+(?:morning|afternoon|evening))?\b", re.I),
    ),
    ("today", re.compile(rf"\b{_DUE_PREP}(?:today|tonight|this\s+(?:afternoon|evening))\b", re.I)),
    ("weekend", re.compile(rf"\b{_DUE_PREP}(?:next|this|the|this\s+coming)\s+weekend\b", re.I)),
    ("next_week", re.compile(rf"\b{_DUE_PREP}next\s+week\b", re.I)),
    ("in", re.compile(rf"\bin\s+{_NUMBER}\s+(?P<unit>days?|weeks?)\b", re.I)),
    (
        "weekday",
        re.compile(rf"\b{_DUE_PREP}(?:(?:this|next|coming|this\s+coming)\s+)?{_WEEKDAY}\b", re.I),
    ),
)
_FUTURE_CUE = re.compile(
    r"\b(?:tomorrow|tonight|later|next|this\s+(?:afternoon|evening|weekend)|by\s+\w+day"
    rf"|on\s+\w+day|{'|'.join(_WEEKDAYS)})\b",
    re.IGNORECASE,
)

_ADVERB = r"(?:really\s+|still\s+|also\s+|definitely\s+|absolutely\s+|just\s+|finally\s+)?"
_OBLIGATION = re.compile(
    rf"\b(?:I|I'll|I\s+will|we)\s+{_ADVERB}(?:need\s+to|have\s+to|have\s+got\s+to"
    r"|must(?!\s+(?:not|have)\b)|ought\s+to)\s+"
    rf"|\bI\s+{_ADVERB}(?:should(?!\s+(?:not|have)\b)|promised\s+to)\s+"
    rf"|\b(?:remember|don't\s+forget|do\s+not\s+forget|mustn't\s+forget|must\s+not\s+forget)"
    r"\s+to\s+",
    re.IGNORECASE,
)
# "I will" is a plan only with a time it is planned for: "tomorrow I will call Sarah".
_INTENTION = re.compile(
    rf"\b(?:I\s+will|I'll|I\s+am\s+going\s+to|I'm\s+going\s+to|I\s+shall)\s+{_ADVERB}"
    r"(?!need\b|have\s+to\b|be\b|never\b|not\b|probably\b|maybe\b)",
    re.IGNORECASE,
)
_NOT_ACTIONS = re.compile(
    r"^(?:say|admit|confess|be\s+honest|tell\s+you|mention|think|remember\s+that|remember\s+when)\b",
    re.IGNORECASE,
)
_LEADING_HELPERS = re.compile(
    r"^(?:(?:remember|try|make\s+sure|be\s+sure|don't\s+forget|not\s+forget)\s+to\s+)+",
    re.IGNORECASE,
)
_CLAUSE_END = re.compile(
    r"\s*(?:[;:]|,\s*(?:and|but|so|because|which|while|although|though|since|or|then|as|"
    r"if|when|otherwise)\b|\s(?:because|although|though|since|while|but|so\s+that|and\s+then"
    r"|and\s+I|as\s+soon\s+as|otherwise)\b|,\s*I\b|,\s*(?:first|second|third)\b)",
    re.IGNORECASE,
)
_INTRO = re.compile(
    rf"^(?:remember|do|get\s+done|finish|handle|take\s+care\s+of)\s+{_NUMBER}\s+(?:more\s+)?"
    r"(?:things|tasks|items|errands)\b"
    r"|^(?:remember|do)\s+(?:the\s+following|a\s+(?:few|couple\s+of)\s+things)\b",
    re.IGNORECASE,
)
_ORDINAL_MARK = re.compile(
    r"(?:^|(?<=[,;:.]))\s*(?:and\s+)?(?:first|second|third|fourth|fifth|sixth)(?:ly)?\b[,:]?\s*"
    r"|(?:^|(?<=[,;:.]))\s*(?:and\s+)?(?:finally|lastly|last\s+but\s+not\s+least)\b[,:]?\s*",
    re.IGNORECASE,
)


# --- text, sentences and times ---------------------------------------------------------------


@dataclass(frozen=True)
class _Anchor:
    """Characters [start, end) of the joined transcript text were said from `t0` to `t1`."""

    start: int
    end: int
    t0: float
    t1: float


@dataclass(frozen=True)
class _Sentence:
    index: int
    start: int
    end: int
    text: str


def _segment_anchors(segment: Segment, text: str, offset: int) -> list[_Anchor]:
    """Word-level anchors when the segment's words spell its text, else one for the segment."""
    t0, t1 = max(0.0, segment.start), max(0.0, segment.start, segment.end)
    spelled = "".join(w.word for w in segment.words or [])
    if segment.words and spelled.strip() == text:
        anchors = []
        # `text` is stripped; the first word's leading space lies before `offset`.
        position = offset - (len(spelled) - len(spelled.lstrip()))
        for word in segment.words:
            start, end = position, position + len(word.word)
            position = end
            w0 = min(max(word.start, t0), t1)
            anchors.append(_Anchor(max(start, offset), end, w0, min(max(word.end, w0), t1)))
        return anchors
    return [_Anchor(offset, offset + len(text), t0, t1)]


def _joined(transcript: Transcript) -> tuple[str, list[_Anchor], list[int]]:
    """The transcript text (as `Transcript.text`), its time anchors and segment start offsets."""
    parts: list[str] = []
    anchors: list[_Anchor] = []
    starts: list[int] = []
    position = 0
    for segment in transcript.segments:
        text = segment.text.strip()
        if not text:
            continue
        if parts:
            position += 1
        starts.append(position)
        anchors.extend(_segment_anchors(segment, text, position))
        parts.append(text)
        position += len(text)
    return " ".join(parts), anchors, starts


def _source(anchors: Sequence[_Anchor], start: int, end: int) -> TimeRange | None:
    """The time range of the characters [start, end), from the anchors that overlap them."""
    hits = [a for a in anchors if a.start < end and a.end > start]
    if not hits:
        return None
    return TimeRange(
        start=round(min(a.t0 for a in hits), 3), end=round(max(a.t1 for a in hits), 3)
    )


def _split_sentences(text: str, segment_starts: Sequence[int]) -> list[_Sentence]:
    """Sentences at . ! ? (not after abbreviations); over-long ones also at segment ends."""
    spans: list[tuple[int, int]] = []
    begin = 0
    for match in _SENTENCE_END.finditer(text):
        said = text[begin : match.end()]
        if _TITLE_ABBREVIATION.search(said) or (
            _ABBREVIATION.search(said) and text[match.end() :].lstrip()[:1].islower()
        ):
            continue
        spans.append((begin, match.end()))
        begin = match.end()
    spans.append((begin, len(text)))
    cut: list[tuple[int, int]] = []
    for start, end in spans:
        # Without punctuation a "sentence" may be the whole recording: Whisper's segment ends
        # are the next best boundaries.
        while len(_WORD.findall(text[start:end])) > _MAX_SENTENCE_WORDS:
            inside = [s for s in segment_starts if start < s < end]
            fitting = [
                s for s in inside if len(_WORD.findall(text[start:s])) <= _MAX_SENTENCE_WORDS
            ]
            if not inside:
                break
            boundary = fitting[-1] if fitting else inside[0]
            cut.append((start, boundary))
            start = boundary
        cut.append((start, end))
    sentences: list[_Sentence] = []
    for start, end in cut:
        stripped_start = start + len(text[start:end]) - len(text[start:end].lstrip())
        stripped_end = start + len(text[start:end].rstrip())
        if re.search(r"\w", text[stripped_start:stripped_end]):
            sentences.append(
                _Sentence(
                    len(sentences), stripped_start, stripped_end, text[stripped_start:stripped_end]
                )
            )
    return sentences


def _stem(word: str) -> str:
    """A rough lemma so that seed/seeds and print/printed/printing count as one word."""
    word = word.lower().replace(_RIGHT_QUOTE, "'")
    if word.endswith("'s"):
        word = word[:-2]
    if len(word) > 4 and word.endswith("ies"):
        word = word[:-3] + "y"
    elif len(word) > 4 and word.endswith("sses"):
        word = word[:-2]
    elif len(word) > 3 and word.endswith("s") and not word.endswith(("ss", "us", "is")):
        word = word[:-1]
    for suffix in ("ing", "ed"):
        if word.endswith(suffix) and len(word) - len(suffix) >= 4:
            word = word[: -len(suffix)]
            if len(word) > 3 and word[-1] == word[-2] and word[-1] not in "lsz":
                word = word[:-1]
            break
    if len(word) > 3 and word.endswith("e"):
        word = word[:-1]
    return word


def _lower_words(text: str) -> list[str]:
    return [m.group().lower().replace(_RIGHT_QUOTE, "'") for m in _WORD.finditer(text)]


def _content_words(text: str) -> list[str]:
    return [w for w in _lower_words(text) if len(w) > 2 and w not in _STOPWORDS]


# --- scoring ---------------------------------------------------------------------------------


def _word_weights(sentences: Sequence[_Sentence]) -> tuple[list[list[str]], dict[str, float]]:
    """Content stems of each sentence, and a TF-IDF-like weight per stem.

    Sentences are the documents: a word said often but in few sentences weighs most.
    """
    stems = [[_stem(w) for w in _content_words(s.text)] for s in sentences]
    tf = Counter(stem for words in stems for stem in words)
    df = Counter(stem for words in stems for stem in dict.fromkeys(words))
    n = len(sentences)
    weight = {
        stem: count * (math.log((1 + n) / (1 + df[stem])) + 1.0) for stem, count in tf.items()
    }
    return stems, weight


def _score(stems: Sequence[str], weight: dict[str, float], covered: set[str]) -> float:
    """Average weight of a sentence's content words, those in `covered` at half.

    Distinct words only, so repeating a word does not inflate a sentence; a sentence of fewer
    than three content words counts as three long, so "Great weather." does not win.
    """
    if not stems:
        return 0.0
    total = sum(weight[s] * (0.5 if s in covered else 1.0) for s in dict.fromkeys(stems))
    return total / max(len(stems), 3)


def _priors(sentences: Sequence[_Sentence], names: Sequence[str]) -> list[float]:
    """Score factors: the opening sets the scene, and people, places and feelings are what a
    diary is about."""
    priors = []
    for index, sentence in enumerate(sentences):
        factor = 1.0 + 0.3 / (1 + index)  # fades after a few sentences
        if any(name in sentence.text for name in names):
            factor *= 1.25
        if _MOOD_WORDS.intersection(_lower_words(sentence.text)):
            factor *= 1.25
        priors.append(factor)
    return priors


def _ranked(
    stems: Sequence[Sequence[str]],
    weight: dict[str, float],
    priors: Sequence[float],
    allowed: Iterable[int],
    top: int,
) -> list[int]:
    """The `top` best sentence indexes, best first; ties go to the earlier sentence.

    Greedy: after each pick the words it said count half, so the next pick tends to be about
    something else and the summary covers more of the recording.
    """
    remaining = list(allowed)
    chosen: list[int] = []
    covered: set[str] = set()
    while remaining and len(chosen) < top:
        best = max(remaining, key=lambda i: (_score(stems[i], weight, covered) * priors[i], -i))
        chosen.append(best)
        remaining.remove(best)
        covered.update(stems[best])
    return chosen


# --- dates -----------------------------------------------------------------------------------


def _day_number(raw: str) -> int | None:
    raw = raw.lower()
    if raw[:1].isdigit():
        return int(re.sub(r"\D", "", raw))
    return _ORDINALS.get(raw)


def _month_number(raw: str) -> int | None:
    if raw.isdigit():
        return int(raw)
    # "may" is a month only when written as one: "I may go" is not a date.
    if raw.lower() == "may" and raw != "May":
        return None
    return _MONTHS.get(raw.lower())


def _explicit_dates(text: str) -> list[tuple[int, int, int | None, int, int]]:
    """(start, end, year or None, month, day) of every date written out in `text`, in order."""
    found: list[tuple[int, int, int | None, int, int]] = []
    for pattern in _DATE_PATTERNS:
        for match in pattern.finditer(text):
            month = _month_number(match.group("month"))
            day = _day_number(match.group("day"))
            year = int(match.group("year")) if match.group("year") else None
            if month is None or day is None or not 1 <= month <= 12 or not 1 <= day <= 31:
                continue
            if any(s < match.end() and match.start() < e for s, e, *_ in found):
                continue
            found.append((match.start(), match.end(), year, month, day))
    return sorted(found)


def _make_date(year: int, month: int, day: int) -> date | None:
    try:
        return date(year, month, day)
    except ValueError:
        return None


def _nearest_year(month: int, day: int, around: date) -> date | None:
    """The date with no year said, in the year that puts it nearest to `around`."""
    candidates = [
        d for d in (_make_date(around.year + k, month, day) for k in (-1, 0, 1)) if d is not None
    ]
    return min(candidates, key=lambda d: (abs((d - around).days), d)) if candidates else None


def _next_on_or_after(month: int, day: int, reference: date) -> date | None:
    """A due date with no year said: its first occurrence from `reference` on."""
    for year in (reference.year, reference.year + 1):
        candidate = _make_date(year, month, day)
        if candidate is not None and candidate >= reference:
            return candidate
    return None


def _next_weekday(reference: date, weekday: int) -> date:
    """The first `weekday` strictly after `reference` ("by Friday" said on a Friday: next one)."""
    return reference + timedelta(days=(weekday - reference.weekday() - 1) % 7 + 1)


def _note_date(sentences: Sequence[_Sentence], recorded_at: datetime | None) -> date | None:
    """The day the entry is about: a date said at its opening, else the recording date."""
    recorded = recorded_at.date() if recorded_at is not None else None
    opening = " ".join(s.text for s in sentences[:_OPENING_SENTENCES])
    for _start, _end, year, month, day in _explicit_dates(opening):
        if year is not None:
            said = _make_date(year, month, day)
        elif recorded is not None:
            said = _nearest_year(month, day, recorded)
        else:
            said = None
        if said is not None:
            return said
    if recorded is not None:
        if re.search(r"\byesterday\b|\blast\s+night\b", opening, re.IGNORECASE):
            return recorded - timedelta(days=1)
        if re.search(r"\btoday\b|\btonight\b|\bthis\s+morning\b", opening, re.IGNORECASE):
            return recorded
        weekday = re.search(rf"\b{_WEEKDAY}\b", opening, re.IGNORECASE)
        if weekday:
            # A weekday alone names the latest such day up to the recording.
            target = _WEEKDAYS[weekday.group("weekday").lower()]
            return recorded - timedelta(days=(recorded.weekday() - target) % 7)
    return recorded


def _due(text: str, reference: date | None) -> tuple[date | None, list[tuple[int, int]]]:
    """The due date said in `text` (None if none or not resolvable) and the spans saying it."""
    for start, end, year, month, day in _explicit_dates(text):
        prep = re.search(r"(?:\b(?:by|on|before|until|till|for)\s+)$", text[:start], re.I)
        span = (prep.start() if prep else start, end)
        if year is not None:
            return _make_date(year, month, day), [span]
        return (_next_on_or_after(month, day, reference) if reference else None), [span]
    for kind, pattern in _RELATIVE_DUE:
        match = pattern.search(text)
        if match is None:
            continue
        spans = [(match.start(), match.end())]
        if reference is None:
            return None, spans
        if kind == "after_tomorrow":
            return reference + timedelta(days=2), spans
        if kind == "tomorrow":
            return reference + timedelta(days=1), spans
        if kind == "today":
            return reference, spans
        if kind == "weekend":
            return _next_weekday(reference, _WEEKDAYS["saturday"]), spans
        if kind == "next_week":
            return _next_weekday(reference, _WEEKDAYS["monday"]), spans
        if kind == "in":
            raw = match.group("n").lower()
            count = int(raw) if raw.isdigit() else _CARDINALS[raw]
            days = count * (7 if match.group("unit").lower().startswith("week") else 1)
            return reference + timedelta(days=days), spans
        return _next_weekday(reference, _WEEKDAYS[match.group("weekday").lower()]), spans
    return None, []


# --- action items ----------------------------------------------------------------------------


@dataclass(frozen=True)
class _Action:
    text: str
    due: date | None
    start: int
    end: int
    sentences: tuple[int, ...]  # where it was said, with the intro of an enumeration


def _clause(text: str) -> str:
    """The clause that starts `text`: up to its end, a semicolon or a new subordinate part."""
    end = _CLAUSE_END.search(text)
    clause = text[: end.start()] if end else text
    return clause.strip().rstrip(".!?,;:").strip()


def _imperative(clause: str, reference: date | None) -> tuple[str, date | None]:
    """Clean action text (due words removed, capitalised) and its due date."""
    due, spans = _due(clause, reference)
    for start, end in sorted(spans, reverse=True):
        clause = clause[:start] + clause[end:]
    clause = _LEADING_HELPERS.sub("", re.sub(r"\s+", " ", clause).strip(" ,.;:"))
    return (clause[:1].upper() + clause[1:]) if clause else "", due


def _actions(sentences: Sequence[_Sentence], reference: date | None) -> list[_Action]:
    """Obligations and plans said in the first person, and the items of said enumerations."""
    found: list[_Action] = []
    index = 0
    while index < len(sentences):
        sentence = sentences[index]
        text = sentence.text
        index += 1
        triggers = list(_OBLIGATION.finditer(text))
        if _FUTURE_CUE.search(text):
            triggers += [
                m for m in _INTENTION.finditer(text)
                if not any(t.start() <= m.start() < t.end() for t in triggers)
            ]
        for trigger in sorted(triggers, key=lambda m: m.start()):
            clause = _clause(text[trigger.end() :])
            if not clause or _NOT_ACTIONS.match(clause):
                continue
            intro = _INTRO.match(clause)
            if intro:
                # "Tomorrow I have to remember three things. First, … Second, …"
                raw = (intro.group("n") or "").lower()
                wanted = (int(raw) if raw.isdigit() else _CARDINALS.get(raw, 0)) or 10
                due_here, _ = _due(text, reference)
                rest_start = trigger.end() + intro.end()
                items = _enumeration(
                    sentences, sentence, rest_start, wanted, due_here, reference
                )
                found.extend(items)
                if items:
                    index = max(index, items[-1].sentences[-1] + 1)
                continue
            action, due = _imperative(clause, reference)
            if not due:
                # "Tomorrow I will call Sarah": the time may come before the trigger.
                due, _ = _due(text[: trigger.start()], reference)
            if action:
                start = sentence.start + trigger.end()
                found.append(
                    _Action(action, due, start, start + len(clause), (sentence.index,))
                )
    return found


def _enumeration(
    sentences: Sequence[_Sentence],
    intro_sentence: _Sentence,
    rest_start: int,
    wanted: int,
    due: date | None,
    reference: date | None,
) -> list[_Action]:
    """The items after an intro: "first, …", "second, …", in this sentence and the next ones."""
    items: list[_Action] = []
    pieces = [(intro_sentence, rest_start)] + [
        (s, 0) for s in sentences[intro_sentence.index + 1 :]
    ]
    for sentence, offset in pieces:
        text = sentence.text[offset:]
        marks = list(_ORDINAL_MARK.finditer(text))
        if not marks or (text[: marks[0].start()].strip(" .,:;") and offset == 0):
            if offset == 0:
                break
            continue
        for mark, following in zip(marks, [*marks[1:], None], strict=True):
            body_start = mark.end()
            body = text[body_start : following.start() if following else len(text)]
            trigger = _OBLIGATION.match(body) or _INTENTION.match(body)
            if trigger:
                body_start += trigger.end()
                body = body[trigger.end() :]
            clause = _clause(body)
            action, item_due = _imperative(clause, reference)
            if action and len(items) < wanted:
                start = sentence.start + offset + body_start + len(body) - len(body.lstrip())
                said_in = tuple(dict.fromkeys((intro_sentence.index, sentence.index)))
                items.append(
                    _Action(action, item_due or due, start, start + len(clause), said_in)
                )
        if len(items) >= wanted:
            break
    return items


# --- people, places, mood, tags --------------------------------------------------------------


@dataclass(frozen=True)
class _Mention:
    name: str
    position: int
    kind: str  # "person", "place", "start" (sentence opener, no evidence), "none"


def _mentions(sentences: Sequence[_Sentence]) -> list[_Mention]:
    mentions: list[_Mention] = []
    for sentence in sentences:
        text = sentence.text
        first_word = _WORD.search(text)
        previous: tuple[str, int] | None = None  # kind and end of the last name in the sentence
        for match in _NAME_RUN.finditer(text):
            tokens = match.group().split()
            lead = 0
            while lead < len(tokens) and _bare(tokens[lead]).lower() in _NOT_NAMES:
                lead += 1
            if lead == len(tokens):
                continue
            at_start = lead == 0 and first_word is not None and match.start() == first_word.start()
            before = [w.lower() for w in _WORD.findall(text[: match.start()])]
            before += [t.lower() for t in tokens[:lead]]
            tokens = tokens[lead:]
            possessive = bool(re.search(r"['\u2019]s$", tokens[-1]))
            name = " ".join([*tokens[:-1], _bare(tokens[-1])])
            after_text = text[match.end() :]
            after = _WORD.match(after_text[1:]) if after_text.startswith(" ") else None
            next_word = after.group().lower() if after else ""
            if after and next_word in _PLACE_SUFFIXES and not possessive:
                # "Elm street" written with a small s is still a street.
                name = f"{name} {after.group()}"
                kind = "place"
            else:
                kind = _kind(name, before, next_word, possessive, at_start)
            if (
                kind == "default"
                and previous is not None
                and previous[0] in {"person", "place"}
                and re.fullmatch(r"\s*(?:,\s*)?(?:and|or|&)?\s*", text[previous[1] : match.start()])
            ):
                # "in Paris and Rome", "with Sarah and Tom": a list shares its kind.
                kind = previous[0]
            kind = "person" if kind == "default" else kind
            mentions.append(_Mention(name, sentence.start + match.start(), kind))
            previous = (kind, match.end())
    return mentions


def _bare(token: str) -> str:
    return re.sub(r"['\u2019]s$", "", token)


def _kind(name: str, before: list[str], next_word: str, possessive: bool, at_start: bool) -> str:
    """Person, place, "none", "start" (capitalised as a sentence opener) or "default".

    "default" is a capitalised word inside a sentence with no other clue: a person, unless it
    continues a list of places.
    """
    last = name.split()[-1]
    if _GROUP_NAME.match(name) or last.lower() in _NOT_NAMES:
        return "none"
    if last.lower() in _PLACE_SUFFIXES:
        return "place"
    if (before[-1] if before else "") in _TITLES:
        return "person"
    # "to the Louvre": the article does not hide a place; otherwise it marks a thing.
    article = bool(before) and before[-1] == "the"
    words = before[:-1] if article else before
    prev = words[-1] if words else ""
    prev2 = words[-2] if len(words) > 1 else ""
    place = prev in _PLACE_BEFORE and not (prev == "to" and prev2 in _TALK_VERBS)
    # "the Gutenberg", "the ancient Roman character", "on Netflix", "on Elm's": not people.
    adjective = prev2 in {"the", "a", "an"} and prev not in _STOPWORDS
    if (article and not place) or adjective or prev in {"a", "an", "on"}:
        return "none"
    if possessive:
        return "person"
    if place:
        return "place"
    if prev in _PERSON_BEFORE or (at_start and next_word in _PERSON_AFTER):
        return "person"
    return "start" if at_start else "default"


def _people_and_places(sentences: Sequence[_Sentence]) -> tuple[list[str], list[str]]:
    """Names in order of first mention; a name ever used as a place is a place."""
    mentions = _mentions(sentences)
    kinds: dict[str, set[str]] = {}
    first: dict[str, int] = {}
    for mention in mentions:
        kinds.setdefault(mention.name, set()).add(mention.kind)
        first.setdefault(mention.name, mention.position)
    people: list[str] = []
    places: list[str] = []
    for name in sorted(first, key=lambda n: (first[n], n)):
        if "place" in kinds[name]:
            places.append(name)
        elif "person" in kinds[name]:
            people.append(name)
    return _drop_partial(people), _drop_partial(places)


def _drop_partial(names: list[str]) -> list[str]:
    """"Sarah" next to "Sarah Jones" is the same person: keep the fuller name."""
    kept = []
    for name in names:
        longer = [
            other for other in names
            if other != name and f" {name} " in f" {other} "
        ]
        if not longer:
            kept.append(name)
    return kept


def _mood(text: str) -> str | None:
    """One or two mood words: said about the speaker ("I felt relieved") or said twice."""
    counts: Counter[str] = Counter()
    first: dict[str, int] = {}
    self_until = -1  # end of the last mood word said about the speaker
    for match in _WORD.finditer(text):
        word = match.group().lower()
        if word not in _MOOD_WORDS:
            continue
        context = text[max(0, match.start() - 40) : match.start()]
        before = [w.lower() for w in _WORD.findall(context)][-2:]
        if _NEGATION.intersection(before) or any(w.endswith("n't") for w in before):
            continue
        # "I feel happy and calm": a list after a feeling said about the speaker continues it.
        continued = self_until >= 0 and re.fullmatch(
            r"\s*,?\s*(?:and|or)?\s*", text[self_until : match.start()]
        )
        about_speaker = bool(continued or _SELF_MOOD.search(context))
        counts[word] += 2 if about_speaker else 1
        self_until = match.end() if about_speaker else -1
        first.setdefault(word, match.start())
    # One passing mention ("the sick corpus") is not the speaker's mood.
    felt = [w for w in counts if counts[w] >= 2]
    best = sorted(felt, key=lambda w: (-counts[w], first[w]))[:2]
    return ", ".join(best) if best else None


def _tags(
    sentences: Sequence[_Sentence],
    scores: Sequence[float],
    names: Iterable[str],
) -> list[str]:
    """Frequent content words, noun-like ones first (seen right after the/a/my/…)."""
    excluded = {_stem(t) for name in names for t in name.split()}
    excluded |= {_stem(w) for w in _MOOD_WORDS}
    top = max(scores, default=0.0) or 1.0
    tf: Counter[str] = Counter()
    forms: dict[str, Counter[str]] = {}
    noun_like: dict[str, bool] = {}
    best_sentence: dict[str, float] = {}
    first: dict[str, int] = {}
    position = 0
    for sentence in sentences:
        words = _lower_words(sentence.text)
        for i, word in enumerate(words):
            position += 1
            if len(word) <= 2 or word in _STOPWORDS or "'" in word:
                continue
            stem = _stem(word)
            if stem in excluded or len(stem) < 3:
                continue
            tf[stem] += 1
            forms.setdefault(stem, Counter())[word] += 1
            first.setdefault(stem, position)
            # "the garden", "the new budget": right after a determiner, or after one adjective.
            prev = words[i - 1] if i else ""
            prev2 = words[i - 2] if i > 1 else ""
            after_determiner = prev in _DETERMINERS or (
                prev2 in _DETERMINERS and (prev not in _STOPWORDS or prev in _NOUN_MODIFIERS)
            )
            noun_like[stem] = noun_like.get(stem, False) or after_determiner
            best_sentence[stem] = max(best_sentence.get(stem, 0.0), scores[sentence.index] / top)

    def score(stem: str) -> float:
        return tf[stem] + 0.5 * noun_like[stem] + 0.5 * best_sentence[stem]

    ranked = sorted(tf, key=lambda s: (-score(s), first[s]))
    chosen = [s for s in ranked if noun_like[s]][:_MAX_TAGS]
    if len(chosen) < _MIN_TAGS:
        # Too few nouns: other words fill in, but past-tense verbs make poor tags.
        others = [
            s for s in ranked
            if s not in chosen and not forms[s].most_common(1)[0][0].endswith("ed")
        ]
        chosen += others[: _MIN_TAGS - len(chosen)]
    # Show each stem as the form said most often (most_common keeps first-said order on ties).
    return [forms[s].most_common(1)[0][0] for s in chosen]


def _title(title_hint: str | None, tags: Sequence[str], highlights: Sequence[Statement]) -> str:
    """The hint, else the top keywords, else the first highlight, cut at a word."""
    hint = " ".join((title_hint or "").split())
    if hint:
        return _shorten(hint)
    if tags:
        words = list(tags[:3])
        return _shorten(", ".join([words[0].capitalize(), *words[1:]]))
    if highlights:
        return _shorten(highlights[0].text.rstrip(".!?"))
    return "Recording without speech"


def _shorten(text: str) -> str:
    if len(text) <= _TITLE_MAX:
        return text
    cut = text[: _TITLE_MAX - 1].rsplit(" ", 1)[0].rstrip(" ,;:")
    return cut + "…"


# --- the writer ------------------------------------------------------------------------------


def write_extractive(
    transcript: Transcript,
    *,
    recorded_at: datetime | None = None,
    title_hint: str | None = None,
) -> DiaryNote:
    """A diary note extracted from the transcript, offline and deterministic.

    `recorded_at` gives the year of dates said without one, resolves "today", "tomorrow" and
    weekdays, and is the note's date when the recording says none. A transcript with no speech
    gives a note that says so.
    """
    text, anchors, segment_starts = _joined(transcript)
    sentences = _split_sentences(text, segment_starts)
    note_date = _note_date(sentences, recorded_at)
    iso_date = note_date.isoformat() if note_date else None
    if not sentences:
        logger.info("no speech in transcript %s; writing an empty note", transcript.job_id)
        return DiaryNote(
            schema_version="1", title=_title(title_hint, [], []), date=iso_date,
            summary="No speech was recognised in this recording.", mood=None, highlights=[],
            people=[], places=[], action_items=[], tags=[],
        )

    people, places = _people_and_places(sentences)
    stems, weight = _word_weights(sentences)
    priors = _priors(sentences, [*people, *places])
    scores = [_score(words, weight, set()) * priors[i] for i, words in enumerate(stems)]
    actions = _actions(sentences, note_date)
    action_sentences = sorted({i for action in actions for i in action.sentences})
    story = [i for i in range(len(sentences)) if i not in action_sentences]
    if len(sentences) <= 3:
        summary_count = len(sentences)
    else:
        summary_count = min(5, max(3, round(len(sentences) / 5)))
    highlight_count = min(_MAX_HIGHLIGHTS, summary_count + 1)
    # What happened comes first; to-dos fill in when the recording is only a to-do list.
    order = _ranked(stems, weight, priors, story, highlight_count)
    order += _ranked(stems, weight, priors, action_sentences, highlight_count - len(order))
    summary_ids = sorted(order[:summary_count])
    highlight_ids = sorted(order[:highlight_count])

    def statement(i: int) -> Statement:
        s = sentences[i]
        return Statement(text=s.text, source=_source(anchors, s.start, s.end))

    highlights = [statement(i) for i in highlight_ids]
    tags = _tags(sentences, scores, [*people, *places])
    action_items: list[ActionItem] = []
    seen: set[str] = set()
    # A line the decoder was unsure of never makes an action item on its own.
    uncertain = [(seg.start, seg.end) for seg in transcript.segments if seg.uncertain]
    for action in actions:
        key = action.text.lower()
        source = _source(anchors, action.start, action.end)
        if key in seen or (source is not None and any(
                source.start < end and start < source.end for start, end in uncertain)):
            continue
        seen.add(key)
        action_items.append(
            ActionItem(
                text=action.text,
                due=action.due.isoformat() if action.due else None,
                source=source,
            )
        )
    note = DiaryNote(
        schema_version="1",
        title=_title(title_hint, tags, highlights),
        date=iso_date,
        summary=" ".join(sentences[i].text for i in summary_ids),
        mood=_mood(text),
        highlights=highlights,
        people=people,
        places=places,
        action_items=action_items,
        tags=tags,
    )
    logger.debug(
        "extractive note: %d sentences, %d highlights, %d action items",
        len(sentences), len(highlights), len(action_items),
    )
    return note


class ExtractiveNoteWriter(NoteWriter):
    """`write_extractive` behind the `NoteWriter` port: no model, no tokens, no failures."""

    provider = "extractive"
    model = EXTRACTIVE_VERSION
    version = EXTRACTIVE_VERSION
    extractive = True

    def write(
        self, transcript: Transcript, *, recorded_at: datetime | None, usage: Usage
    ) -> DiaryNote:
        return write_extractive(transcript, recorded_at=recorded_at)
