"""The example notebook (docs/notebook.ipynb) runs top to bottom: open, customise, plan, build,
verify and boot the demo image, exactly as a reader would run it in Jupyter.

The notebook is executed headlessly with nbclient in a kernel of THIS interpreter (a kernelspec
written to a temporary directory, so a user-wide "python3" kernel of another Python is never
picked), with ``LIVEOS_DEMO_IMAGE`` pointing at the azl fixture image. Any failing cell fails the
test, with the cell and its traceback in the message.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import nbformat
import pytest
from jupyter_client.kernelspec import KernelSpecManager
from jupyter_client.manager import KernelManager
from nbclient import NotebookClient

from tests.conftest import FixtureImageFactory

NOTEBOOK = Path(__file__).resolve().parents[2] / "docs" / "notebook.ipynb"
KERNEL = "liveos-test-python"
#: Per cell: the build and the QEMU boot (TCG, 400 s boot timeout) are the slow ones.
CELL_TIMEOUT = 1800


def read_notebook(path: Path) -> nbformat.NotebookNode:
    node: nbformat.NotebookNode = nbformat.read(path, as_version=4)  # type: ignore[no-untyped-call]
    return node


def this_interpreter_kernel(root: Path) -> KernelManager:
    """A kernel manager that starts ipykernel under ``sys.executable`` (this venv's Python)."""
    spec_dir = root / "kernels" / KERNEL
    spec_dir.mkdir(parents=True)
    spec = {
        "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": "liveos tests",
        "language": "python",
    }
    (spec_dir / "kernel.json").write_text(json.dumps(spec))
    specs = KernelSpecManager(kernel_dirs=[str(root / "kernels")])
    return KernelManager(kernel_name=KERNEL, kernel_spec_manager=specs)


def test_committed_notebook_has_no_outputs() -> None:
    """The repository keeps the notebook clean: outputs are made by running it, not committed."""
    nb = read_notebook(NOTEBOOK)
    code = [cell for cell in nb.cells if cell.cell_type == "code"]
    assert code, "the notebook has no code cells"
    assert all(not cell.outputs and cell.execution_count is None for cell in code)


@pytest.mark.root
@pytest.mark.boot
def test_notebook_runs(
    fixture_image: FixtureImageFactory, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    image = fixture_image("azl", "qcow2")
    out = tmp_path / "out"
    out.mkdir()
    # The kernel inherits the environment (and the session's private LIVEOS_CACHE_DIR).
    monkeypatch.setenv("LIVEOS_DEMO_IMAGE", str(image.path))
    monkeypatch.setenv("LIVEOS_NOTEBOOK_OUT", str(out))

    nb = read_notebook(NOTEBOOK)
    client = NotebookClient(
        nb,
        km=this_interpreter_kernel(tmp_path / "jupyter"),
        timeout=CELL_TIMEOUT,
        resources={"metadata": {"path": str(NOTEBOOK.parent)}},  # run in docs/, as Jupyter would
    )
    try:
        client.execute()  # raises CellExecutionError (cell source + traceback) on a failing cell
    finally:
        nbformat.write(nb, tmp_path / "executed.ipynb")  # type: ignore[no-untyped-call]  # what ran, for a look after a failure

    outputs = [cell.outputs for cell in nb.cells if cell.cell_type == "code"]
    assert all(cell.execution_count is not None for cell in nb.cells if cell.cell_type == "code")
    assert (out / "notebook-live.iso").is_file(), (
        "the notebook did not build its ISO into LIVEOS_NOTEBOOK_OUT"
    )
    last_text = "".join(o.get("text", "") for o in outputs[-1] if o.output_type == "stream")
    assert "Live ISO:" in last_text, last_text
    boot_text = "".join(o.get("text", "") for cell in outputs for o in cell if o.output_type == "stream")
    assert "boot OK" in boot_text, boot_text
