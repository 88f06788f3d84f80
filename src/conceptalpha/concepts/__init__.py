"""Stage 3 — concepts: sources, the point-in-time stock→concept membership graph, reports."""

from conceptalpha.concepts.graph import DEFAULT_MIN_MEMBERS, ConceptGraph, build_concept_graph
from conceptalpha.concepts.keywords import KeywordSettings, company_keywords
from conceptalpha.concepts.report import coverage_report, report_text
from conceptalpha.concepts.sources import SOURCE_KINDS, ConceptSource, SourceIssues, from_frame, read_source

__all__ = [
    "DEFAULT_MIN_MEMBERS",
    "SOURCE_KINDS",
    "ConceptGraph",
    "ConceptSource",
    "KeywordSettings",
    "SourceIssues",
    "build_concept_graph",
    "company_keywords",
    "coverage_report",
    "from_frame",
    "read_source",
    "report_text",
]
