"""Where the running factory lives, so ``factory status``/``down`` work from any folder.

``factory up`` records its home and project directory (both absolute) in a per-user file
(``$XDG_CONFIG_HOME/talkfactory/factory.json``, else ``~/.config/...``). A later command whose own
home holds no factory (a relative ``TALKFACTORY_HOME`` read from another folder) uses the recorded one.
``factory up`` itself finds ``prefect.yaml`` in the current folder, else in the checkout this
package was installed from.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import talkfactory


@dataclass(frozen=True)
class Whereabouts:
    home: Path
    project_dir: Path


def pointer_file() -> Path:
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "talkfactory" / "factory.json"


def remember(home: Path, project_dir: Path) -> None:
    path = pointer_file()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps({"home": str(home.resolve()), "project_dir": str(project_dir.resolve())}))
    tmp.replace(path)


def recalled() -> Whereabouts | None:
    """The factory ``up`` last started, if its record is readable."""
    try:
        data = json.loads(pointer_file().read_text())
        return Whereabouts(Path(data["home"]), Path(data["project_dir"]))
    except (OSError, ValueError, KeyError, TypeError):
        return None


def forget(home: Path) -> None:
    """Drop the record once that factory is down (another home's record is left alone)."""
    found = recalled()
    if found is not None and found.home == home.resolve():
        pointer_file().unlink(missing_ok=True)


def default_project_dir(cwd: Path | None = None) -> Path:
    """The folder with ``prefect.yaml``: this one, else the checkout the package runs from."""
    here = (cwd or Path.cwd()).resolve()
    if (here / "prefect.yaml").is_file():
        return here
    checkout = Path(talkfactory.__file__).resolve().parents[1]
    return checkout if (checkout / "prefect.yaml").is_file() else here
