"""Optional: a language-model explainer over the OpenAI-compatible chat API (a local vLLM, llama.cpp or
Ollama server at a URL the user gives), with P2's prompt style (papers.md §2.7) and a replayable cache.

* :class:`ChatClient` — ``generate(messages) -> Response(text, logprobs)`` (EleutherAI delphi's convention).
  POSTs ``{base_url}/chat/completions`` with the standard library only; a timeout per request, retries with
  exponential back-off on timeouts, connection errors and HTTP 5xx/429; clear errors
  (:class:`LLMTimeoutError`, :class:`LLMHTTPError`, :class:`LLMReplyError`) naming the URL and what came back.
* **Cache**: every request and reply is appended to a JSONL file, keyed by ``sha256`` of
  ``{"model", "messages", "params"}``. A cached request is answered from the file without contacting the
  server, so a book rebuilds identically with the server stopped (``offline=True`` or ``base_url=None``
  never contacts it and raises :class:`LLMCacheMissError` on a miss).
* :class:`LLMExplainer` — the :class:`~recsae_core.concepts.explainers.Explainer` protocol: P2's
  explanation prompt ("We're studying neurons in a recommendation model …", one few-shot example per
  dataset, the case as ``item<TAB>level`` lines) and its simulation prompt (predict the last item's level,
  0–10). An answer without a level 0–10 simulates as ``None`` (unreadable; see :mod:`.scores`).

Nothing else in recsae_core imports this module.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import socket
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from recsae_core.concepts.cases import Case, CasePool, case_text
from recsae_core.concepts.explainers import Description
from recsae_core.data.dataset import RecDataset

__all__ = [
    "ChatClient",
    "ChatConfig",
    "LLMCacheMissError",
    "LLMError",
    "LLMExplainer",
    "LLMHTTPError",
    "LLMReplyError",
    "LLMTimeoutError",
    "Response",
    "explanation_messages",
    "llm_configured",
    "llm_latent_scores",
    "parse_level",
    "simulation_messages",
]


class LLMError(RuntimeError):
    """A language-model request failed (the subclasses say how)."""


class LLMTimeoutError(LLMError):
    """The server did not answer within the timeout, after every retry."""


class LLMHTTPError(LLMError):
    """The server answered with an HTTP error status."""


class LLMReplyError(LLMError):
    """The server answered 200 but not with an OpenAI chat-completion object."""


class LLMCacheMissError(LLMError):
    """Offline, and the request is not in the cache."""


@dataclass(frozen=True)
class Response:
    """A chat completion: the text and, when the server returned them, per-token logprobs
    (``[{"token": str, "logprob": float}, ...]``), as delphi's ``Response``."""

    text: str
    logprobs: list[dict[str, Any]] | None = None


@dataclass
class ChatConfig:
    """Where and how to ask (P2 sampling defaults: temperature 0.6, top_p 0.9, max_tokens 64)."""

    base_url: str | None
    """e.g. ``http://127.0.0.1:8000/v1`` (vLLM), ``http://127.0.0.1:11434/v1`` (Ollama); None = offline."""
    model: str = "meta-llama/Meta-Llama-3-8B-Instruct"
    """The model name sent to the server (P2: Llama-3-8B-Instruct)."""
    cache_path: str | None = None
    """JSONL cache file (None: no cache)."""
    api_key: str | None = None
    """Sent as ``Authorization: Bearer``; default from ``$OPENAI_API_KEY`` if set (local servers need none)."""
    timeout: float = 60.0
    """Seconds per request."""
    retries: int = 2
    """Extra attempts after a timeout, a connection error or HTTP 5xx/429."""
    backoff: float = 0.5
    """First wait between attempts in seconds (doubles each time)."""
    offline: bool = False
    """Answer only from the cache (also when ``base_url`` is None)."""
    params: dict[str, Any] = field(
        default_factory=lambda: {"temperature": 0.6, "top_p": 0.9, "max_tokens": 64}
    )
    """Sampling parameters sent with every request (part of the cache key)."""

    def __post_init__(self) -> None:
        if self.base_url is not None and not re.match(r"^https?://", self.base_url):
            raise ValueError(
                f"ChatConfig.base_url must start with http:// or https://, got {self.base_url!r}"
            )
        if not self.timeout > 0:
            raise ValueError(f"ChatConfig.timeout must be > 0, got {self.timeout}")
        if isinstance(self.retries, bool) or not isinstance(self.retries, int) or self.retries < 0:
            raise ValueError(f"ChatConfig.retries must be an int >= 0, got {self.retries!r}")
        if self.backoff < 0:
            raise ValueError(f"ChatConfig.backoff must be >= 0, got {self.backoff}")


class ChatClient:
    """OpenAI-compatible chat completions with an on-disk replay cache (module docstring)."""

    def __init__(self, config: ChatConfig) -> None:
        self.config = config
        self._lock = threading.Lock()
        self._cache: dict[str, Response] = {}
        self.hits = self.misses = 0
        if config.cache_path is not None and Path(config.cache_path).exists():
            self._load(Path(config.cache_path))

    # ------------------------------------------------------------------------------------------ cache
    def _load(self, path: Path) -> None:
        lines = path.read_text(encoding="utf-8").splitlines()
        for n, line in enumerate(lines, 1):
            if not line.strip():
                continue
            try:
                rec = json.loads(line)
                self._cache[rec["key"]] = Response(rec["response"]["text"], rec["response"].get("logprobs"))
            except (json.JSONDecodeError, KeyError, TypeError) as e:
                if n == len(lines):  # a last line cut short by an interrupted write: ignore it
                    continue
                raise LLMError(
                    f"{path}, line {n}: not a cache record ({e}); delete the line or the file"
                ) from e

    def key(self, messages: Sequence[Mapping[str, str]]) -> str:
        """sha256 of ``{"model", "messages", "params"}`` (sorted keys)."""
        blob = json.dumps(
            {"model": self.config.model, "messages": list(messages), "params": self.config.params},
            sort_keys=True,
            ensure_ascii=False,
        )
        return hashlib.sha256(blob.encode()).hexdigest()

    def _store(self, key: str, messages: Sequence[Mapping[str, str]], resp: Response) -> None:
        self._cache[key] = resp
        if self.config.cache_path is None:
            return
        rec = {
            "key": key,
            "model": self.config.model,
            "messages": list(messages),
            "params": self.config.params,
            "response": {"text": resp.text, "logprobs": resp.logprobs},
            "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        }
        path = Path(self.config.cache_path)
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "a", encoding="utf-8") as f:  # one line per record: appends do not interleave
            f.write(json.dumps(rec, ensure_ascii=False) + "\n")
            f.flush()
            os.fsync(f.fileno())

    # ------------------------------------------------------------------------------------------- call
    def generate(self, messages: Sequence[Mapping[str, str]], **params: Any) -> Response:
        """One chat completion for ``messages`` (``[{"role": ..., "content": ...}, ...]``), from the cache
        when it holds the same (model, messages, params). Extra ``params`` are refused: set them in
        :class:`ChatConfig` so they are part of every key."""
        if params:
            raise TypeError(f"set sampling parameters in ChatConfig.params, not per call: {sorted(params)}")
        for m in messages:
            if not isinstance(m, Mapping) or "role" not in m or "content" not in m:
                raise ValueError(f"each message needs 'role' and 'content', got {m!r}")
        key = self.key(messages)
        with self._lock:
            if key in self._cache:
                self.hits += 1
                return self._cache[key]
        cfg = self.config
        if cfg.offline or cfg.base_url is None:
            raise LLMCacheMissError(
                f"request {key[:12]} is not in the cache {cfg.cache_path!r} and the client is offline; "
                "give ChatConfig.base_url of a running OpenAI-compatible server to fill the cache"
            )
        resp = self._post(messages)
        with self._lock:
            self.misses += 1
            self._store(key, messages, resp)
        return resp

    def _post(self, messages: Sequence[Mapping[str, str]]) -> Response:
        cfg = self.config
        url = cfg.base_url.rstrip("/") + "/chat/completions"  # type: ignore[union-attr]
        body = json.dumps({"model": cfg.model, "messages": list(messages), **cfg.params}).encode()
        headers = {"Content-Type": "application/json"}
        api_key = cfg.api_key or os.environ.get("OPENAI_API_KEY")
        if api_key:
            headers["Authorization"] = f"Bearer {api_key}"
        last: Exception | None = None
        for attempt in range(cfg.retries + 1):
            if attempt:
                time.sleep(cfg.backoff * 2 ** (attempt - 1))
            req = urllib.request.Request(url, data=body, headers=headers, method="POST")
            try:
                with urllib.request.urlopen(req, timeout=cfg.timeout) as r:
                    raw = r.read()
            except urllib.error.HTTPError as e:
                text = e.read()[:300].decode("utf-8", "replace")
                err = LLMHTTPError(f"{url} answered HTTP {e.code} {e.reason}: {text!r}")
                if e.code >= 500 or e.code == 429:
                    last = err
                    continue
                raise err from None
            except TimeoutError as e:
                last = LLMTimeoutError(f"{url} did not answer within {cfg.timeout} s ({e})")
                continue
            except urllib.error.URLError as e:
                if isinstance(e.reason, TimeoutError | socket.timeout):
                    last = LLMTimeoutError(f"{url} did not answer within {cfg.timeout} s")
                else:
                    last = LLMError(f"cannot reach {url}: {e.reason}; is the server running?")
                continue
            return _parse_reply(raw, url)
        assert last is not None
        raise type(last)(f"{last} (after {cfg.retries + 1} attempts)") from None


def _parse_reply(raw: bytes, url: str) -> Response:
    try:
        obj = json.loads(raw)
    except json.JSONDecodeError as e:
        raise LLMReplyError(f"{url} answered with something that is not JSON: {raw[:200]!r}") from e
    try:
        choice = obj["choices"][0]
        text = choice["message"]["content"]
    except (KeyError, IndexError, TypeError) as e:
        raise LLMReplyError(
            f"{url} answered JSON without choices[0].message.content (not an OpenAI chat completion): "
            f"{json.dumps(obj)[:200]}"
        ) from e
    if not isinstance(text, str):
        raise LLMReplyError(f"{url}: choices[0].message.content is {type(text).__name__}, expected a string")
    lp = (choice.get("logprobs") or {}).get("content") if isinstance(choice.get("logprobs"), dict) else None
    logprobs = [{"token": t.get("token"), "logprob": t.get("logprob")} for t in lp] if lp else None
    return Response(text, logprobs)


# ------------------------------------------------------------------------------------------- prompts
SYSTEM = (
    "We're studying neurons in a recommendation model. Each neuron looks for some particular kind of item "
    "or user. Look at the parts of the sequences the neuron activates for and summarize in a single sentence "
    "what the neuron is looking for. Don't list examples of items.\n\n"
    "The activation format is item<tab>activation. Activation values range from 0 to 10. A neuron finding "
    "what it's looking for is represented by a non-zero activation value. The higher the activation value, "
    "the stronger the match. History items are shown with activation 0; the last item is the model's "
    "recommendation (or the item itself) with the neuron's activation."
)
SIM_SYSTEM = (
    "We're studying neurons in a recommendation model. Each neuron looks for some particular kind of item "
    "or user. Given an explanation of a neuron and a sequence, predict the neuron's activation (an integer "
    "from 0 to 10) on the last item, whose activation is shown as 'unknown'. Answer with the number only."
)
PREFIX = "the main thing this neuron does is find"

#: one few-shot example per dataset family (P2 §2.7): (case lines, explanation).
FEW_SHOT: dict[str, tuple[str, str]] = {
    "movielens": (
        "Star Wars (1977) (Action, Adventure, Sci-Fi)\t0\nAlien (1979) (Action, Horror, Sci-Fi)\t0\n"
        "Blade Runner (1982) (Film-Noir, Sci-Fi)\t0\nThe Terminator (1984) (Action, Sci-Fi, Thriller)\t9",
        "science-fiction action movies from the late 1970s and 1980s.",
    ),
    "lastfm": (
        "Metallica (metal, thrash metal, rock)\t0\nIron Maiden (heavy metal, metal)\t0\n"
        "Slayer (thrash metal, metal)\t0\nMegadeth (thrash metal, heavy metal)\t8",
        "heavy and thrash metal artists.",
    ),
    "generic": (
        "item a (label x)\t0\nitem b (label x, label y)\t0\nitem c (label x)\t7",
        "items carrying label x.",
    ),
}


def _family(ds_name: str) -> str:
    n = ds_name.lower()
    return (
        "movielens" if n.startswith("ml-") or "movielens" in n else "lastfm" if "lastfm" in n else "generic"
    )


def _block(j: int | str, text: str) -> str:
    return f"Neuron {j}\nActivations:\n<start>\n{text}\n<end>\n"


def explanation_messages(
    case_texts: Sequence[str], dataset: str, latent: int | str = ""
) -> list[dict[str, str]]:
    """P2's explanation prompt: system, one few-shot exchange for ``dataset``'s family, then the cases."""
    ex_cases, ex_expl = FEW_SHOT[_family(dataset)]
    ask = f"\nExplanation of neuron {{}} behavior: {PREFIX}"
    return [
        {"role": "system", "content": SYSTEM},
        {"role": "user", "content": _block(1, ex_cases) + ask.format(1)},
        {"role": "assistant", "content": f" {ex_expl}"},
        {"role": "user", "content": "\n".join(_block(latent, t) for t in case_texts) + ask.format(latent)},
    ]


def simulation_messages(explanation: str, case_text_unknown: str) -> list[dict[str, str]]:
    """P2's simulation prompt: the explanation, the case with the last level 'unknown'; answer 0–10."""
    return [
        {"role": "system", "content": SIM_SYSTEM},
        {
            "role": "user",
            "content": f"Explanation: {explanation}\n\nSequence:\n<start>\n{case_text_unknown}\n<end>\n\n"
            "Activation of the last item (0-10):",
        },
    ]


def parse_level(text: str) -> int | None:
    """The first integer in ``text`` if it is 0–10, else ``None`` (P2 turns it into -1: unreadable)."""
    m = re.search(r"-?\d+(?:\.\d+)?", text)
    if m is None:
        return None
    v = float(m.group())
    return int(v) if v.is_integer() and 0 <= v <= 10 else None


class LLMExplainer:
    """P2's explain/simulate with a language model (module docstring)."""

    def __init__(self, client: ChatClient, pool: CasePool, dataset: RecDataset) -> None:
        self.client, self.pool, self.dataset = client, pool, dataset
        self.name = f"llm:{client.config.model}"

    def describe(self, cases: Sequence[Case]) -> Description:
        if not cases:
            raise ValueError("describe needs at least one case")
        texts = [case_text(self.pool, self.dataset, c) for c in cases]
        msgs = explanation_messages(texts, self.dataset.name, cases[0].latent)
        text = self.client.generate(msgs).text.strip().split("\n")[0].strip()
        if not text:
            raise LLMReplyError("the model returned an empty explanation")
        return Description(f"{PREFIX} {text}", explainer=self.name)

    def simulate(self, description: Description, case: Case) -> int | None:
        msgs = simulation_messages(
            description.text, case_text(self.pool, self.dataset, case, show_level=False)
        )
        return parse_level(self.client.generate(msgs).text)


def llm_configured(url: str | None, cache_path: str | None) -> bool:
    """Whether a page's language-model switch is on: a server URL, or a cache file to replay from."""
    return url is not None or bool(cache_path and Path(cache_path).exists())


def llm_latent_scores(
    pool: CasePool,
    dataset: RecDataset,
    latents: Sequence[int],
    config: ChatConfig,
    *,
    n_boot: int = 1000,
    seed: int = 0,
) -> Any:
    """P2's describe → simulate → confidence (papers.md §2.7, §4.5) for ``latents`` of ``pool`` with a language
    model: :class:`LLMExplainer` over ``config`` (replayed from its cache when ``config.base_url`` is None),
    P2's cases (:func:`~recsae_core.concepts.sample_cases`, seeded), scored by
    :func:`~recsae_core.concepts.score_latents` (unreadable answers counted in ``unparseable`` and scored
    both by P2's rule and strictly)."""
    from recsae_core.concepts.cases import CaseConfig, sample_cases
    from recsae_core.concepts.scores import score_latents, simulate_latents

    explainer = LLMExplainer(ChatClient(config), pool, dataset)
    cases = sample_cases(pool, [int(j) for j in latents], CaseConfig(seed=seed))
    return score_latents(simulate_latents(explainer, cases, pool), n_boot=n_boot, seed=seed)
