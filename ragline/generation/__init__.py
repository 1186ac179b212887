"""Grounded answers with citations.

answering   ``answer_question(components, question, namespace=..., filter=..., mode=...)`` → ``Answer``
answer      the ``Answer`` record (JSON-ready), ``Citation``, ``DroppedCitation``, ``AnswerUsage``
evidence    retrieved chunks as numbered sources, split into sentences scored against the question
answerer    the ``Answerer`` protocol
llm         ``LLMAnswerer``: grounded prompt to an OpenAI-compatible chat model, citations checked
extractive  ``ExtractiveAnswerer``: the offline default, quoted sentences with citations
sentences   sentence splitting and citation markers
"""

from ragline.generation.answer import NOT_FOUND, Answer, AnswerKind, AnswerUsage, Citation, DroppedCitation
from ragline.generation.answering import ANSWERERS, AnswererChoice, answer_question

__all__ = [
    "ANSWERERS",
    "NOT_FOUND",
    "Answer",
    "AnswerKind",
    "AnswerUsage",
    "AnswererChoice",
    "Citation",
    "DroppedCitation",
    "answer_question",
]
