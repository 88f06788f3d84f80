"""conceptalpha: HIST and its peers, end to end, on CPU or GPU.

Stages, each a subpackage, with data flowing one way:
``data`` → ``features`` → ``concepts`` → ``models`` → ``training`` →
``evaluation`` → ``experiments``. A module imports only from stages before it
(and from the cross-cutting helpers ``errors`` and ``io``).
"""

__version__ = "0.1.0"
