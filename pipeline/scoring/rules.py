"""The vocabulary of the answer reader (pipeline.scoring.reader): its named patterns, English and Chinese,
and the small text helpers they need. The cascade that uses them is documented in pipeline.scoring.reader.

Every pattern is possessive or bounded (wrapper runs of at most four, gaps of at most 60 characters,
windows of BEFORE/AFTER characters), so a 20 KB reply is read in linear time.
"""

from __future__ import annotations

import re
import unicodedata
from functools import lru_cache

from pipeline.scoring import languages

AFTER = 300  # how much text after a letter to inspect
BEFORE = 160  # how far back a sentence start or a negation is looked for

# CJK commas, stops, brackets and curly quotes to ASCII, before NFKC folds the full-width forms.
_FOLD = str.maketrans(
    dict(
        zip(
            "\u3001\u3002\uff0e\u3010\u3011\u201c\u201d\u2018\u2019\u300c\u300d",
            [",", ". ", ". ", "[", "]", '"', '"', "'", "'", '"', '"'],
            strict=True,
        )
    )
)
# A letter token ends here: not "CT", "T2", "B-cell", "A's", "e.g".
END = r"(?![A-Za-z0-9]|[-'][A-Za-z0-9]|\.[a-z])"
CLOSE = r"[)\]}*_'\"`$]*+"
WRAPPERS = "([{*_'\"`$"
TOKEN = re.compile(r"[(\[{*_'\"`$]*+(?P<letter>[A-Za-z])(?P<close>" + CLOSE + ")" + END)
OPTION = re.compile(r"\s*[(\[]?([A-Za-z])\s*[.):\]]\s*(.*)", re.S)
FENCE = re.compile(r"```(?:[\w+-]*\n)?(.*?)```", re.S)
# What may stand between a cue and its answer: wrappers, an adverb, a copula, a hedge, "option".
_LEAD = (
    r"[\s\"'`*_:,=>(\[\]{\u2013\u2014\u2192-]*+(?:(?i:here|then|clearly|definitely)\s+)?"
    r"(?:(?i:is|are|was|would\s+be|should\s+be|will\s+be|be)(?![A-Za-z])|(?:应该?|应当)?(?:是|为|选择?(?!项)))?"
    r"[\s\"'`*_:,(\[{]*+(?:(?i:most\s+)?(?i:likely|probably)(?![A-Za-z])[\s,]*+)?"
    r"(?:(?i:option|choice|letter)(?![A-Za-z])|选项)?[\s\"'`*_:(\[{$]*+"
)
FINAL = re.compile(
    r"(?:\\boxed\s*+\{[\s{]*+(?:\\text(?:bf)?\s*+\{\s*+)?|最终(?:答案|选择|选项)"
    r"|(?<![A-Za-z])(?i:final[\s_]+(?:answer|choice|option|selection)s?)(?![A-Za-z]))" + _LEAD
)
CUE1 = re.compile(
    r"(?:(?<![A-Za-z])(?i:(?:correct|best|right|most\s+likely|selected|chosen)[\s_]+"
    r"(?:answer|option|choice|match)s?|(?<![Tt]o\s)answers?(?:\s+to\s+(?:this|the)\s+question)?"
    r"|conclusion|best\s+guess|my\s+(?:final\s+)?(?:choice|pick|selection|guess|response)"
    r"|(?:selected|selection|response)(?=\s*+[:=])"
    r"|I\s+(?:think|believe)\s+it(?:'s|\s+is)|I(?:'d|'ll|'m\s+going\s+to|\s+would|\s+will)?\s+"
    r"(?:choose|select|pick|go\s+with|opt\s+for|say|guess|favou?r|lean\s+towards?)|going\s+with"
    r"|leaning\s+towards?)(?![A-Za-z])"
    r"|[\"'](?i:choice|option|selection|selected[_ ]option|prediction|letter)[\"']\s*:"
    r"|(?:正确|最佳|参考)?答案|答(?=\s*:)|结论|(?:正确|最佳)选项|选(?:择|定)?(?![项题])|倾向于?|"
    + languages.CUES
    + ")"
    + _LEAD
)
CUE2 = re.compile(
    r"(?:(?<![A-Za-z])(?i:most\s+likely|probably|likely|(?:most\s+)?consistent\s+with"
    r"|compatible\s+with|in\s+keeping\s+with|(?:suggestive|indicative|diagnostic|characteristic"
    r"|typical)\s+of|classic\s+(?:for|of)|points?\s+(?:to|towards)|indicates?|represents?"
    r"|favou?rs?|correspond(?:s|ing)?\s+to|looks?\s+like|(?:appears?|seems?)\s+to\s+be|best\s+(?:described|categori[sz]ed"
    r"|classified)\s+as|classify\s+it\s+as|(?:this|it|that)(?:'s|\s+(?:is|should\s+be|must\s+be))"
    r"|(?:imaging\s+)?(?:modality|organ|region|lesion|diagnosis|finding|plane|sequence)"
    r"(?=[\"'*_\s]*:)|the\s+(?:organ|modality|lesion|finding|diagnosis|abnormality|region|plane"
    r"|sequence|image|scan|study|structure)(?:\s+[\w-]+){0,2}?\s+(?:is|shows?|demonstrates?)"
    r"|this(?:\s+[\w-]+){0,2}?\s+(?:shows?|demonstrates?)|so|thus|hence|therefore|leaves"
    r"|leaving|makes?|making)(?![A-Za-z])"
    r"|最可能(?:的)?(?:诊断|答案|选项)?(?:是|为)?|最符合(?:的)?(?:是|为)?|考虑(?:为|是)?"
    r"|诊断为|应为|即为|这是|此为|对应)" + _LEAD
)
# A letter that opens a clause (or follows "option", "so", "think"…), for PRED1/PRED2 after it.
MENTION = re.compile(
    r"(?:^|(?<=[.!?:;,(\n]\s)|(?<=[.!?:;,(\n\u3400-\u9fff])|(?P<pre>(?i:\b(?:so|thus|hence"
    r"|therefore|then|and|but|why|think|believe|option|choice)\s+)|选项))[\[*'\"(]{0,4}+"
    r"(?P<letter>[A-Za-z])" + CLOSE + END,
    re.M,
)
PRED1 = re.compile(
    r"\s*+(?:(?i:is|was|would\s+be)\s+(?i:the\s+|my\s+)?(?i:correct|right|(?:final\s+)?answer"
    r"|best\s+(?:answer|option|choice)|best(?=\s*[.,;!]|$))(?![\w-])|(?:项|选项)?\s*+(?:是|为)?"
    r"\s*+(?:正确|对的|最佳答案))"
)
PRED2 = re.compile(
    r"\s*+(?i:(?:(?:is|seems|appears|looks)\s+(?:to\s+be\s+)?)?(?:the\s+)?(?:most\s+(?:likely"
    r"|consistent|appropriate|accurate|plausible|probable)|best\s+(?:fit|match))|(?:best\s+)?"
    r"(?:fits|matches)(?:\s+[\w-]+){0,4}?\s+best|best\s+(?:fits|matches|describes|explains)"
    r"|(?:looks|seems)\s+(?:right|correct))(?![\w-])|\s*+(?:最符合|最可能|最合适)"
)
TAIL = re.compile(
    r"(?:[,:\u2013\u2014-]\s*+(?:(?i:which\s+is|that\s+is|i\.e\.,?|namely)\s+)?"
    r"(?:(?i:option|choice|answer)\s+)?|\(\s*+(?:(?i:option|choice)\s+)?|(?i:option|answer)\s+)"
    r"[*_]*+(?P<letter>[A-Z])[*_]*+\)?[*_]*+(?=[.!]?[ \t]*(?:\n|$)|[.!]\s)",
    re.M,
)
VERDICT = re.compile(
    r"^[\s>*_#\u2022-]*+(?:(?i:option|choice)\s*+)?[(\[*_]*+(?P<letter>[A-Z])[)\]*_]*+\s*+"
    r"(?:[.):\u2013\u2014-]|\()(?P<rest>[^\n]*+)",
    re.M,
)
POSITIVE = re.compile(
    r"(?i:\b(?:most\s+likely|correct|the\s+one|best\s+(?:fit|match|answer|choice|option)"
    r"|fits\s+best|matches))\b|[\u2713\u2714\u2705]|符合|正确|最可能|最佳"
)
NEGATION = re.compile(
    r"(?i:\b(?:not|no|nor|neither|never|unlikely|incorrect|wrong|exclude[sd]?|excluding"
    r"|rules?\s+out|ruled\s+out|against|absent|without|rather\s+than|than|instead\s+of|unlike"
    r"|inconsistent|less\s+likely|except)\b|n't\b)|[不非无没]|排除|错误"
)
HEDGE = re.compile(
    r"(?i:\b(?:if|whether|unless|could|might|may|possible|possibly|consider|differential"
    r"|alternatively|also|other|either)\b)|如果|假如|若|或"
)
DECIDE = re.compile(
    r"(?i:\b(?:answer|correct|best|therefore|thus|hence|so|appears)\b)|答案|故|因此|所以"
)
NEG_BEFORE = re.compile(
    r"(?:(?i:\b(?:not|no|less|least|never|hardly)|n't)\s+(?:\w+\s+)?|[不未没别非勿]\w?)$"
)
NEG_AFTER = re.compile(
    r"\s*+(?:\([^()\n]{0,60}\)\s*+)?(?i:(?:is|are|was|seems|appears|looks)\s+)?(?:(?i:not|out"
    r"|wrong|incorrect|unlikely|less\s+likely|excluded|ruled\s+out|eliminated|inconsistent|doesn't"
    r"|does\s+not|can\s+be\s+(?:excluded|ruled\s+out))(?![A-Za-z])|不|错误|可排除)"
)
# After a soft vote, the rest of its sentence may take it back: "…, which is absent here".
RETRACT = re.compile(
    r"(?i:\b(?:which|that)\s+(?:is|are)\s+(?:not|absent|lacking|missing)\b|\b(?:is|are)\s+(?:absent"
    r"|not\s+(?:seen|present))\b|\bhowever\b|\bnevertheless\b|(?<!even\s)\bif\b|\bunless\b)|然而|如果"
)
MODAL = re.compile(r"(?i:\b(?:could|might|may)\s+(?:\w+\s+)?|\bwould\s+be\s+)$")
_CONDITIONAL = re.compile(r"(?i:\b(?:if|whether|unless|suppose|assuming)\b)|如果|假如|假设|若")
_FORCED = re.compile(r"(?i:\bif\s+(?:I|we)\s+(?:had|have|must|were)\s+to\b|\bif\s+forced\b)")
# A strict (soft-tier) letter is followed by punctuation, a bracket, a dash or a connector.
FOLLOW = re.compile(
    r"\s*+(?:$|[.,;:!?)\]}\n(\u2013\u2014-]|(?i:is|was|would|as|because|since|given|due|based"
    r"|which|for|though|although|but|here|to\s+me|from|in\s+this)\b)"
)
# The letter that follows an option's text: "Spleen (C)", "the liver — C", "the spleen, option C".
SAID = re.compile(
    r"\s*+(?:\(\s*+[*_]*+(?:(?i:option)\s+)?(?P<letter>[A-Za-z])[*_]*+\s*\)|[,\u2013\u2014-]\s*+"
    r"(?:(?i:option|choice|answer)\s+)?(?P<upper>[A-Z])(?=[*_]*+\s*(?:[.,;!]|$)))"
)
# After a soft cue, a short phrase and then a bracketed letter: "consistent with a small cyst (D)".
GAP = re.compile(
    r"(?P<gap>(?:(?!(?i:not|no|rather|than|instead|or|and|but|nor)\b)[^.;!?\n()]){0,60}?)"
    r"\(\s*+(?:(?i:option)\s+)?(?P<letter>[A-Z])\s*+\)"
)
HEADINGS = re.compile(r"(?:[ \t]*#{1,6}[ \t][^\n]*\n\s*)+")
ECHO_LINE = re.compile(r"^[\s*_\u2022-]*+[(\[]?([A-Z])(?:[.):\]]|[ \t]*$)", re.M)
BARE = re.compile(
    r"[\s(\[{*_'\"`.$]*+(?:(?i:option|choice|letter)\s*+[:=-]?\s*+[(\[{*_'\"`]*+)?"
    r"(?P<letter>[A-Za-z])[\s)\]}*_'\"`.:,;!$]*+"
)
LABEL = re.compile(
    r"[\s*_`#]*+[(\[]?(?P<letter>[A-Za-z])(?:(?:\*\*|__)?[.):\],]|\*\*|[ \t]+[-\u2013\u2014]"
    r"|[ \t]+(?=\([^()\n]*\)\s*(?:$|[.,;:\n]))|(?=[ \t]*(?:\n|$)))" + END
)
_ALTERNATIVE = re.compile(
    r"[)\]}*_'\"`]*+\s*+(?:[,/&]|(?i:or|and|vs\.?|versus)\b|或者?|和|与|及|还是)\s*+"
    r"(?:(?i:option)\s*+|选项)?[(\[*'\"]*+(?P<letter>[A-Z])" + END
)
_SENTENCE_START = re.compile(r".*[.!?;\n]\s*", re.S)
# Words that may follow a chosen "A"/"I" without making it an article or a pronoun.
_CONNECTORS = frozenset(
    {"because", "since", "as", "is", "given", "due", "based", "which", "for", "and", "or", "but"}
    | {"then", "with", "to", "in", "on", "at", "if", "so"}
)
# A reply that takes its answer back: the answer given after the last of these stands.
CORRECTION = re.compile(
    r"(?i:\b(?:wait|actually|correction|on\s+(?:second\s+thought|reflection|closer\s+(?:inspection"
    r"|look))|let\s+me\s+(?:re-?check|reconsider|re-?think|re-?examine|re-?evaluate|correct)"
    r"|reconsider(?:ing)?|scratch\s+that|I\s+(?:was|am)\s+wrong|I\s+misread|I\s+made\s+a\s+mistake"
    r"|(?:that|this)(?:'s|\s+is|\s+was)\s+(?:wrong|incorrect|a\s+mistake)|sorry)\b)"
    r"|更正|不对|等等|修正|重新考虑|纠正"
)
# An answer in tags of any case: "<answer>B</answer>", "<ANSWER> b </ANSWER>", "<choice>C</choice>".
TAG = re.compile(
    r"<\s*+(?P<tag>(?i:(?:final[_ ]?)?answer|choice|option|selection|selected|prediction))\s*+>"
    r"(?P<body>[^<>]{0,200})<\s*+/\s*+(?P=tag)\s*+>"
)
# A bold letter after a copula, ending its sentence: "the value is **D**.", "It is **B**".
BOLD_IS = re.compile(
    r"(?i:\b(?:is|was|be))\s++(?:\*\*|__)\s*+[(\[]?(?P<letter>[A-Z])[)\]]?\s*+(?:\*\*|__)"
    r"(?=\s*+[.!]?[ \t]*(?:\n|$))",
    re.M,
)
# Letters rejected right after a chosen one: "D. it can't be A or B", "C, not B.", "B。不是 A".
_LETTERS = r"[(\[]?[A-Z][)\]]?(?:\s*+(?:,|/|(?i:or|and|nor)\b|或|和)\s*+[(\[]?[A-Z][)\]]?)*" + END
REJECT = re.compile(
    r"(?i:(?:(?:it|this)\s+)?(?:can(?:'t|not)\s+be|could(?:n't|\s+not)\s+be|is(?:n't|\s+not)"
    r"|(?:definitely\s+|certainly\s+|clearly\s+)?not|rather\s+than|instead\s+of|unlike)"
    r"\s+(?:(?:option|choice)\s+)?)"
    + _LETTERS
    + r"|(?:不是|而非|并非|排除)\s*+(?:选项)?"
    + _LETTERS
    + r"|(?:(?i:options?|choices?)\s+)?"
    + _LETTERS
    + r"\s+(?i:(?:is|are)(?:n't|\s+not)\s+\w+"
    r"|(?:is|are)\s+(?:wrong|incorrect|unlikely|excluded|ruled\s+out)|(?:do|does)(?:n't|\s+not)\s+\w+)"
)
REFUSAL = re.compile(
    r"(?i:\b(?:I|we)(?:\s+(?:can(?:not|'t|\s+not)|could(?:n't|\s+not)|won't\s+be\s+able\s+to"
    r"|will\s+not\s+be\s+able\s+to|must\s+decline\s+to)|(?:'m|\s+am)\s+(?:unable|not\s+able)\s+to"
    r"|\s+do(?:n't|\s+not)\s+have\s+the\s+ability\s+to)\s+(?:\w+\s+)?(?:help(?!\s+but)|assist"
    r"|answer|provide|give|make|offer|analy[sz]e|interpret|identify|determine|tell|diagnose"
    r"|evaluate|comply|say|(?:see|view|access|open|load)\s+(?:\w+\s+){0,2}?(?:images?|pictures?"
    r"|photos?|scans?|files?|attachments?)\b)(?!\s+(?:\w+\s+){0,2}?(?:definitive|definitively"
    r"|for\s+(?:sure|certain)|with\s+(?:certainty|confidence)|exactly|precisely|conclusively"
    r"|100%))|\bno\s+image\s+(?:was|has\s+been|is)\s+(?:provided|attached|uploaded|shared"
    r"|included)|\bimage\s+(?:didn't|did\s+not|failed\s+to)\s+(?:come\s+through|load|upload)"
    r"|\bwithout\s+(?:seeing\s+)?the\s+image\b|\b(?:impossible|not\s+possible)\s+to\s+"
    r"(?:determine|tell|say|answer)\b(?!\s+(?:definitively|for\s+(?:sure|certain)"
    r"|with\s+certainty))|\bcannot\s+be\s+(?:determined|answered)\b)"
    r"|(?:无法|不能|没法|不可以|不便)(?!完全|百分之百|绝对|精确)[^,.;!?\n]{0,6}?(?:查看|看到|看清"
    r"|识别|回答|提供|做出|作出|判断|确定|诊断|解读|分析|帮助|协助|访问|打开)"
    r"|看不(?:到|清|见)[^,.;!?\n]{0,6}?图|(?:未|没有)(?:提供|上传|收到)[^,.;!?\n]{0,4}?图"
)

# Joint answers.
_LEVEL = (
    r"(?i:(?:imaging\s+)?modality|technique|body\s*(?:part|region)|organs?|lesions?(?:\s+type)?"
    r"|abnormalit(?:y|ies)|findings?|diagnos[ie]s|disease)(?![A-Za-z])|影像模态|模态|成像方式"
    r"|检查方式|身体部位|解剖部位|部位|器官|脏器|病变|病灶|异常|诊断|疾病"
)
ANCHOR = re.compile(
    rf"(?<![A-Za-z])(?:{_LEVEL})|(?i:\bQ\s*\d{{1,2}}|\b(?:question|step|level|part)\s*\d{{1,2}})"
    r"(?![0-9])|第[一二三四五六1-6]题|^[\s>*_#|-]*+\(?\d{1,2}\s*[.):-]",
    re.M,
)
LETTER_LEVEL = re.compile(
    rf"(?<![A-Za-z0-9])(?P<letter>[A-Za-z])\s*(?:\(\s*(?:{_LEVEL})\s*\)|\s(?:for|as)\s+(?:the\s+)?"
    rf"(?:{_LEVEL}))"
)
SEG_LETTER = re.compile(
    r"(?<![A-Za-z0-9])[(\[{*_'\"`]{0,4}+(?P<letter>[A-Za-z])(?P<close>" + CLOSE + ")" + END
)
SEG_NEG = re.compile(
    r"(?i:\b(?:not|rather\s+than|instead\s+of|unlike|over|excluding|rules?\s+out|than)[^\w;]+"
    r"(?:(?!(?:but|and)\b)\w+[^\w;]+){0,4}$)|(?:不是|而非|并非|排除)[^\w;]*(?:\w+[^\w;]+){0,2}$"
)
CHAIN_NOISE = re.compile(
    r"\((?!\s*(?:(?i:option)\s+)?[A-Za-z]\s*\))[^()\n]{0,60}\)|\\boxed|\\text(?:bf)?|</?\w+>"
    r"|(?<![A-Za-z0-9])(?:Q|(?i:question|step|level)\s*)?\d{1,2}\s*[.):-]"
    rf"|(?:{_LEVEL})\s*[:=-]|(?i:\band\b)|[\[\]{{}}()'\"`*_#]"
)
CHAIN_SHAPE = re.compile(r"[\s:=-]*+[A-Za-z](?:[\s,;/|&>\u2192-]++[A-Za-z])*+[\s.,;!]*+")
CHAIN_MARKER = re.compile(
    r"(?<![A-Za-z])(?i:(?:final\s+)?answers?|sequence)(?![A-Za-z])(?:\s+(?i:is|are)\b)?"
    r"[\s\"'*]*[:=-]?|答案(?:分别|依次)?(?:是|为)?|(?:分别|依次)(?:是|为)|(?:"
    + languages.CHAIN_CUES
    + r")\s*+[:=]?"
)
CHAIN_BOXED = re.compile(r"\\boxed\s*\{((?:[^{}]|\{[^{}]*\})*)\}")
RUN = re.compile(
    r"(?<![A-Za-z0-9'])[A-Z](?![A-Za-z0-9'])(?:(?:\s*+[,;/|&>\u2192-]\s*+(?:and\s+)?|\s+and\s+"
    r"|\s+)[A-Z](?![A-Za-z0-9']))+"
)
ECHOED = re.compile(r"(?i:\b(?:options?|choices?|possible|available|choose|among|from)\b)|选项")
# A reasoning model's answer follows its last </think>; an unclosed <think> has no answer yet.
THINK = re.compile(r"(?s:.*)</think>|<think>(?s:.*)")
RUN_LEAD = re.compile(
    r"(?:(?i:\b(?:answers?|are|is|order|sequence|so|thus|therefore|hence))\W*|[:=]\s*"
    r"|(?:依次|分别)?(?:是|为)\W*)$"
)


def fold(text: str) -> str:
    """Fold full-width letters and brackets and CJK punctuation to ASCII ("。" becomes ". ")."""
    return unicodedata.normalize("NFKC", text.translate(_FOLD))


def unwrap(text: str) -> str:
    """Drop a reasoning block; strip the reply and up to three nested fences around all of it."""
    text = THINK.sub("", text, count=1).strip() if "think>" in text else text.strip()
    for _ in range(3):  # a bounded number of nested fences keeps long junk replies linear
        if not (match := FENCE.fullmatch(text)):
            break
        text = match[1].strip()
    return text


def norm(text: str) -> str:
    """Case-fold and keep words only: "B-cell Lymphoma." is "b cell lymphoma"."""
    return " ".join(re.sub(r"[\W_]+", " ", text.casefold()).split())


norm_option = lru_cache(maxsize=512)(norm)  # option texts recur on every call


def starts_with(said: str, option_text: str) -> bool:
    """Say whether normalised `said` (ending in a space) opens with the option's whole text."""
    wanted = norm_option(option_text)
    return bool(wanted) and said.startswith(wanted + " ")


def named_option(after: str, offered: dict[str, str]) -> str | None:
    """Return the option whose text opens `after` (the longest, if texts nest), or None."""
    said = norm(after[: max(map(len, offered.values())) + 40]) + " "
    hits = {k: len(norm_option(v)) for k, v in offered.items() if starts_with(said, v)}
    longest = [k for k, size in hits.items() if size == max(hits.values())]
    return longest[0] if len(longest) == 1 else None


def is_word(letter: str, wrapped: bool, after: str) -> bool:
    """Say whether an unwrapped letter is really an English word ("a", "A patient", "I think")."""
    if wrapped:
        return False
    if letter.islower():
        return not re.match(r"\s*(?:$|[.,;:!?)\]])", after)
    # An article or pronoun is followed by a lower-case word or an abbreviation ("A CT", "A T2"),
    # a chosen letter by a connector or by a new sentence ("A Hope this helps").
    following = re.match(r"[ \t]+([A-Za-z]+\d*)", after)
    if letter not in "AI" or following is None:
        return False
    word = following[1]
    return word.lower() not in _CONNECTORS and (
        not word.istitle() or len(word) == 1 or word[-1].isdigit()
    )


def has_alternative(after: str) -> bool:
    """Say whether another letter follows at once: "B or C", "A, D", "B和C"."""
    match = _ALTERNATIVE.match(after)
    return match is not None and not is_word(match["letter"], False, after[match.end() :])


def contradicts(letter: str, after: str, offered: dict[str, str]) -> bool:
    """Say whether the text after a label names another option instead ("B. Liver", C = Liver)."""
    said = norm(after[:AFTER]) + " "
    if not said.strip() or starts_with(said, offered.get(letter, "")):
        return False
    return any(starts_with(said, text) for k, text in offered.items() if k != letter)


def is_echo(text: str, offered: dict[str, str]) -> bool:
    """Say whether the text lists two or more offered options ("A. CT\\nB. MRI")."""
    if len({m[1] for m in ECHO_LINE.finditer(text)} & offered.keys()) >= 2:
        return True
    if len(set(re.findall(r"(?<![A-Za-z])([A-Z])\s*[.):]", text)) & offered.keys()) < 2:
        return False  # cheap test first: fewer than two labels cannot be an echo
    pairs = sum(
        1
        for k, v in offered.items()
        if v and re.search(rf"(?<![A-Za-z]){k}\s*[.):]\s*(?i:{re.escape(v)})", text)
    )
    return pairs >= 2


def sentence(text: str, pos: int) -> str:
    """The sentence (or clause after ";" or a line break) that `pos` is in, up to `pos`."""
    before = text[max(0, pos - BEFORE) : pos]
    start = _SENTENCE_START.match(before)
    return before[start.end() :] if start else before


def rest_of_sentence(text: str, pos: int) -> str:
    """The rest of the sentence from `pos` (bounded)."""
    return re.split(r"[.!?\n](?:\s|$)", text[pos : pos + BEFORE], maxsplit=1)[0]


def conditional(clause: str) -> bool:
    """Say whether a clause is a condition ("if it were…"), not a forced choice ("if I had to")."""
    return bool(_CONDITIONAL.search(clause)) and not _FORCED.search(clause)
