"""Concepts: describe and score SAE latents (P2 §2.7, papers.md §4.5-4.6), with or without a language model.

| module | what |
|---|---|
| :mod:`.cases` | P2's activation levels and cases (describe / held-out / random), item and case text |
| :mod:`.explainers` | the describe/simulate protocol and the metadata explainer (no language model) |
| :mod:`.scores` | P2 confidence, detection, simulation and coherence, each with bootstrap intervals |
| :mod:`.llm` | optional: an OpenAI-compatible chat client with a replayable JSONL cache, P2's prompts |

Nothing here imports :mod:`.llm`; it is loaded only when asked for.
"""

from recsae_core.concepts import cases, explainers, scores
from recsae_core.concepts.cases import *  # noqa: F403
from recsae_core.concepts.explainers import *  # noqa: F403
from recsae_core.concepts.scores import *  # noqa: F403

__all__ = [name for module in (cases, explainers, scores) for name in module.__all__]
