"""Where a model, tokenizer or dataset named on the command line comes from: a local path or the Hub.

One rule for every command, so a typo in a folder name gets "no such file or folder" at once instead
of a minute of retries against the Hub, and a Hub id that cannot be reached says so in one line.
"""

from __future__ import annotations

import functools
import os
from pathlib import Path
from typing import Literal

from huggingface_hub import HfApi
from huggingface_hub.errors import HfHubHTTPError, RepositoryNotFoundError

# A Hub lookup that gets no answer within this many seconds is reported as unreachable.
HUB_CHECK_TIMEOUT_S = 5.0


def looks_like_local_path(name: str) -> bool:
    """Whether `name` was meant as a local path rather than a Hub id ("name" or "org/name").

    It is local when it exists; when it starts with ".", "~" or a separator, ends with a separator,
    holds a backslash or more than one "/"; or when its first part is a folder here (`runs/gpt1-tny`
    where `runs/` exists is a typo of a local folder, not a Hub repo of a user called "runs").
    """
    if os.path.exists(os.path.expanduser(name)):
        return True
    if name.startswith((".", "~", "/", os.sep)) or name.endswith(("/", os.sep)) or "\\" in name or name.count("/") > 1:
        return True
    return "/" in name and Path(name.split("/", 1)[0]).is_dir()


def check_folder_or_hub_repo(name: str, what: str, hint: str = "") -> None:
    """The one rule for a model or tokenizer named by the user: a local folder that is there, or a Hub model
    repo that is. Otherwise a clear error: at once for a path, within seconds for a Hub id."""
    if not looks_like_local_path(name):
        check_hub_repo(name, "model", what)
    elif not os.path.isdir(os.path.expanduser(name)):
        raise FileNotFoundError(f"No such {what} folder: {name!r}.{hint}")


def check_hub_repo(name: str, repo_type: Literal["model", "dataset"], what: str) -> None:
    """A clear error, within a few seconds, when `name` is no local path and the Hub has no such repo or cannot
    be reached; nothing when it is there (or when working offline, where the Hub libraries read their cache)."""
    if os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes", "on"):
        return
    _ask_hub(name, repo_type, what)


@functools.lru_cache(maxsize=32)
def _ask_hub(name: str, repo_type: Literal["model", "dataset"], what: str) -> None:
    """The lookup itself. A repo found is remembered (a command reads a model's tokenizer and config
    from the same repo); a failure raises, which is never cached."""
    try:
        HfApi().repo_info(name, repo_type=repo_type, timeout=HUB_CHECK_TIMEOUT_S)
    except RepositoryNotFoundError:
        raise FileNotFoundError(
            f"{name!r} is no local file or folder, and the Hugging Face Hub has no {repo_type} by that name that "
            f"you can see. Check the {what}'s name, or log in (`hf auth login`) if the repo is private."
        ) from None
    except HfHubHTTPError:
        return  # the Hub answered (gated, rate-limited, ...): the download itself says what to do
    except Exception as error:  # no answer at all: no network, DNS, a proxy, a timeout
        raise ConnectionError(
            f"{name!r} is no local file or folder, and the Hugging Face Hub cannot be reached to fetch it "
            f"({type(error).__name__}: {error}). Check the {what}'s name, connect to the internet, or set "
            "HF_HUB_OFFLINE=1 to use only what is already in the local cache."
        ) from None
