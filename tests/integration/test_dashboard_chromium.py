"""The collector's web dashboard in headless Chromium: its charts render with the stored data.

Needs Debian's `chromium` package (`apt-get install -y chromium`); without it the
test is skipped, or fails under DCIM_REQUIRE_SERVERS=1 (CI).
"""

from __future__ import annotations

import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from tests.collector import dashboard_seed as seed
from tests.support.servers import free_port, servers_required

pytestmark = pytest.mark.servers

CHROMIUM_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    # Virtual time runs the page's scripts and waits for its fetches before dumping.
    "--virtual-time-budget=15000",
)
BLUE = (0x4A, 0xA3, 0xFF)  # the PUE line
AMBER = (0xF5, 0xB9, 0x42)  # the plant line


def chromium() -> str:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        found = shutil.which(name)
        if found:
            return found
    message = "headless Chromium is not installed: sudo apt-get install -y chromium"
    if servers_required():
        pytest.fail(message)
    pytest.skip(message)


@pytest.fixture(scope="module")
def page(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Path]]:
    folder = tmp_path_factory.mktemp("chromium")
    store = folder / "store.sqlite"
    seed.seed(store)
    config = seed.write_config(folder, store, free_port())
    with seed.collector_with_http(config, free_port(), folder / "collector.log") as running:
        yield running.url, folder


def run_chromium(url: str, folder: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    profile = folder / f"profile-{len(list(folder.glob('profile-*')))}"
    result = subprocess.run(
        [chromium(), *CHROMIUM_FLAGS, f"--user-data-dir={profile}", *extra, url],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return result


def test_charts_render_with_data(page: tuple[str, Path]) -> None:
    url, folder = page
    dom = run_chromium(url, folder, "--dump-dom").stdout
    for chart in ("pue-chart", "plant-chart"):
        svg = re.search(rf'<svg[^>]*id="{chart}"[^>]*>(.*?)</svg>', dom, re.DOTALL)
        assert svg is not None, f"no {chart} in the rendered page"
        opening = svg.group(0)[: svg.group(0).index(">")]
        points = re.search(r'data-points="(\d+)"', opening)
        assert points is not None, f"{chart} was not drawn by the page's script"
        assert int(points.group(1)) >= 60
        path = re.search(r'<path d="([^"]+)"[^>]*class="series"', svg.group(1))
        assert path is not None, f"{chart} has no data line"
        assert path.group(1).count("L") == int(points.group(1)) - 1
    # The headline numbers were filled in from the API.
    pue = re.search(r'id="pue-now">([^<]*)<', dom)
    assert pue is not None
    assert 1.4 < float(pue.group(1)) < 1.6
    assert re.search(r'id="avail-now">99\.99\d\d %<', dom)
    assert "ups-a" in dom  # the outage table and the device list
    assert "advisory" in dom  # the optimiser panel


def test_screenshot_shows_both_lines(page: tuple[str, Path]) -> None:
    import matplotlib.image as mpimg  # noqa: PLC0415  (PNG decoding only here)

    url, folder = page
    shot = folder / "dashboard.png"
    run_chromium(url, folder, "--window-size=1280,1400", f"--screenshot={shot}")
    pixels = (np.asarray(mpimg.imread(shot))[:, :, :3] * 255).round().astype(int)
    assert pixels.std() > 10  # not a blank page

    def count(rgb: tuple[int, int, int]) -> int:
        return int((np.abs(pixels - np.array(rgb)).max(axis=2) <= 12).sum())

    assert count(BLUE) > 300
    assert count(AMBER) > 300
