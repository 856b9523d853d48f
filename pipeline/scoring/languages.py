"""Answer markers in languages other than English and Chinese, for the reader's explicit cues.

Each entry is how an answer is announced, up to where the letter follows: Korean "정답: B",
"정답은 D입니다"; Japanese "答え: C", "正解はBです"; German "Antwort: B", "Die Antwort lautet E";
French "réponse est C"; Spanish "la respuesta correcta es B"; Portuguese, Italian, Russian
"Resposta/Risposta/Ответ: B". A copula the language puts between marker and letter is part of
the marker. The letter's own checks (boundary, negation, alternatives) are the English ones.
"""

from __future__ import annotations

CUES = (
    r"정답(?:은|는)?|답(?:은|는|\s*(?=:))|(?:正解|答え)(?:は)?"
    r"|(?i:(?:die\s+)?(?:richtige\s+)?antwort(?:\s+(?:ist|lautet))?"
    r"|(?:la\s+)?(?:bonne\s+)?réponses?(?:\s+(?:correcte\s+)?(?:est|sont))?"
    r"|(?:la\s+)?respuestas?(?:\s+correctas?)?(?:\s+(?:es|son))?"
    r"|(?:a\s+)?respostas?(?:\s+corretas?)?(?:\s+(?:é|são))?"
    r"|(?:la\s+)?rispost[ae](?:\s+corrett[ae])?(?:\s+(?:è|sono))?|ответы?)(?![^\W\d_])"
)
# The same markers for joint answers ("정답: A, C, B, D", "Réponses : C, A, B, D").
CHAIN_CUES = CUES
