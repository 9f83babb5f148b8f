"""The real Neuroglancer client in headless Chromium, for tests that look at what it draws.

`neuroglancer_browser()` starts the client hosted by the `neuroglancer` Python package on
127.0.0.1 and opens it in Debian's Chromium (WebGL2 through SwiftShader, on the CPU) with
playwright; `NeuroglancerBrowser.screenshot(state)` shows a state and returns the pixels once
every visible chunk and mesh is loaded. It raises as soon as Neuroglancer reports a chunk it
failed to load (it would wait for it forever), and `TimeoutError` saying what is still loading
after the timeout. A missing (404) image chunk is not a failure: it draws black.
In the "xy-3d" layout the 2D panel is the left half of the screenshot, the 3D panel the right.
"""

from __future__ import annotations

import shutil
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import neuroglancer
import numpy as np
import pytest

from petavox.workflows.file_server import origin_of

CHROMIUM_FLAGS = [
    "--no-sandbox",
    "--disable-gpu-sandbox",
    "--disable-dev-shm-usage",
    "--use-angle=swiftshader",
    "--enable-unsafe-swiftshader",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    # nothing but 127.0.0.1 and localhost resolves: the page cannot reach the internet
    "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1, EXCLUDE localhost",
]
SCREENSHOT_TIMEOUT_S = 30.0
DEMO_SIZE = 96  # the e2e tests' demo run (tests/e2e/conftest.py): 96 × 96 × 24 voxels


@dataclass(frozen=True)
class DemoRun:
    """A finished `petavox demo` (tests/e2e/conftest.py): its output folder and what it
    printed."""

    output: Path
    stdout: str


@dataclass
class NeuroglancerBrowser:
    """A Neuroglancer viewer open in a headless browser page."""

    viewer: neuroglancer.Viewer
    page: Any  # playwright.sync_api.Page

    @property
    def origin(self) -> str:
        """The page's origin: a file server must allow it for the viewer to read layers."""
        return origin_of(self.viewer.get_viewer_url())

    def screenshot(
        self,
        state: dict[str, Any],
        size: tuple[int, int] = (800, 400),
        timeout: float = SCREENSHOT_TIMEOUT_S,
    ) -> np.ndarray:
        """RGBA pixels (height, width, 4) of `state` drawn at `size` (width, height), UI hidden."""
        self.viewer.set_state(neuroglancer.ViewerState(state))
        with self.viewer.config_state.txn() as s:
            s.show_ui_controls = False
            s.show_panel_borders = False
            s.viewer_size = list(size)
        deadline = time.monotonic() + timeout
        while True:  # the first reply can come before the canvas took the new size
            done = threading.Event()
            replies: list[Any] = []
            loading: list[Any] = []

            def reply(s: Any, replies: list[Any] = replies, done: threading.Event = done) -> None:
                replies.append(s)
                done.set()

            self.viewer.async_screenshot(reply, statistics_callback=loading.append)
            while not done.wait(0.2):
                last = loading[-1].total.to_json() if loading else {}
                if last.get("visibleChunksFailed"):  # it would wait for them forever
                    raise RuntimeError(f"Neuroglancer failed to load chunks: {last}")
                if time.monotonic() > deadline:
                    raise TimeoutError(f"Neuroglancer still loading after {timeout:g} s: {last}")
            shot = replies[0].screenshot
            if (shot.width, shot.height) == tuple(size):
                return np.asarray(shot.image_pixels)


@contextmanager
def neuroglancer_browser(viewport: tuple[int, int] = (1000, 600)) -> Iterator[NeuroglancerBrowser]:
    """A headless Chromium showing a fresh `neuroglancer.Viewer`; everything stops on exit."""
    from playwright.sync_api import sync_playwright

    chromium = shutil.which("chromium")
    if chromium is None:
        pytest.fail("Debian's chromium is not installed (bash .ci/setup installs it)")
    neuroglancer.set_server_bind_address("127.0.0.1")
    viewer = neuroglancer.Viewer()
    try:
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=chromium, args=CHROMIUM_FLAGS)
            try:
                page = browser.new_page(viewport={"width": viewport[0], "height": viewport[1]})
                page.goto(viewer.get_viewer_url())
                yield NeuroglancerBrowser(viewer, page)
            finally:
                browser.close()
    finally:
        neuroglancer.stop()


def plain_xy_view(
    state: dict[str, Any], unit_m: float, position: list[float], units_per_pixel: float
) -> None:
    """Make `state` one 2D (xy) panel at `position` (in units of `unit_m` metres on every axis),
    `units_per_pixel` per screen pixel, with no axis lines, default annotations or scale bar:
    nothing drawn but the layers."""
    state.update(
        dimensions={axis: [unit_m, "m"] for axis in "xyz"},
        position=position,
        crossSectionScale=units_per_pixel,
        layout="xy",
        showAxisLines=False,
        showDefaultAnnotations=False,
        showScaleBar=False,
    )


def segment_rgb(segment: int, seed: int = 0) -> np.ndarray:
    """Neuroglancer's colour of `segment` under the colour seed `seed` (0: a layer's default)."""
    from neuroglancer.segment_colors import hex_string_from_segment_id

    text = hex_string_from_segment_id(seed, segment)
    return np.array([int(text[i : i + 2], 16) for i in (1, 3, 5)], np.float64)


def shaded_fraction(panel: np.ndarray, rgb: np.ndarray) -> float:
    """The fraction of pixels that are `rgb` under some lighting (k × rgb, k in 0.15–1.3): a
    mesh's surface in the 3D panel."""
    pixels = panel.astype(np.float64)
    k = (pixels @ rgb) / (rgb @ rgb)
    off = np.linalg.norm(pixels - k[..., np.newaxis] * rgb, axis=-1)
    return float(((off < 12) & (k > 0.15) & (k < 1.3)).mean())
