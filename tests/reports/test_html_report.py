"""The HTML report: one offline file; its viewer checked in headless Chromium (skipped without it)."""

from __future__ import annotations

import base64
import gzip
import re
import shutil
import time
from pathlib import Path

import numpy as np
import pytest

from medcad.errors import InputError
from medcad.findings import Finding, FindingMasks
from medcad.io.luna import LunaNodule
from medcad.io.scan import Scan
from medcad.pipeline.model_set import ModelIdentity
from medcad.reports import html_report
from medcad.reports.html_report import ReportSummary, nifti1_bytes, viewer_volume, write_report, write_report_index

SPACING = (0.8, 0.7, 2.5)          # x (columns), y (rows), z (slices) mm
ORIGIN = (-20.0, 35.5, -110.0)
SHAPE = (40, 64, 64)
CENTRES_IRC = ((12, 20, 18), (28, 44, 40))
RADII_MM = (5.0, 4.0)
PROBS = (0.93, 0.61)
UID = "1.2.826.0.1.3680043.8.498.1"
MODELS = (ModelIdentity("segmentation", "nodule_unet2d", "test weights", "ab" * 32),
          ModelIdentity("nodule", "luna_classifier", "test weights", "cd" * 32))
BUNDLE = (Path(html_report.__file__).parent.parent / "resources" / "niivue" / "niivue.umd.js").read_text()


def _synthetic():
    """Lung-like background with 2 bright spheres; masks by thresholding; findings at the centres."""
    rng = np.random.default_rng(0)
    hu = (np.full(SHAPE, -850) + rng.integers(-30, 30, size=SHAPE)).astype(np.int16)
    scan = Scan.from_array(hu, origin_xyz=ORIGIN, spacing_xyz=SPACING, series_uid=UID,
                           metadata={"Manufacturer": "ACME", "ConvolutionKernel": "B30f", "SliceThickness": "2.5",
                                     "PatientName": "SHOULD NOT APPEAR"})
    z, y, x = np.indices(SHAPE)
    labels = np.zeros(SHAPE, dtype=np.uint16)
    findings = []
    for k, ((cz, cy, cx), radius, prob) in enumerate(zip(CENTRES_IRC, RADII_MM, PROBS), start=1):
        inside = ((z - cz) * SPACING[2]) ** 2 + ((y - cy) * SPACING[1]) ** 2 + ((x - cx) * SPACING[0]) ** 2 <= radius**2
        hu[inside] = 60 + rng.integers(-20, 20, size=int(inside.sum()))
        near = ((z - cz) * SPACING[2]) ** 2 + ((y - cy) * SPACING[1]) ** 2 + ((x - cx) * SPACING[0]) ** 2 <= (radius + 3) ** 2
        mask = near & (hu > -300)
        labels[mask] = k
        findings.append(Finding(UID, tuple(float(v) for v in scan.irc_to_xyz((cz, cy, cx))), prob,
                                0.4 if k == 1 else None, (float(cz), float(cy), float(cx)), 2 * radius, int(mask.sum())))
    return scan, findings, FindingMasks.from_label_map(labels)


@pytest.fixture(scope="module")
def synthetic():
    return _synthetic()


@pytest.fixture(scope="module")
def report_file(tmp_path_factory, synthetic):
    scan, findings, masks = synthetic
    references = [LunaNodule(UID, findings[0].center_xyz, 10.0), LunaNodule(UID, (0.0, 60.0, -60.0), 6.0)]
    path = tmp_path_factory.mktemp("report") / "scan report.html"
    summary = write_report(path, scan, findings, masks, MODELS, references, threshold=0.5)
    return path, summary


@pytest.fixture(scope="module")
def empty_report_file(tmp_path_factory, synthetic):
    scan = synthetic[0]
    path = tmp_path_factory.mktemp("empty") / "empty.html"
    write_report(path, scan, [], None, MODELS, threshold=0.5)
    return path


def _outside_bundle(text: str) -> str:
    assert text.count(BUNDLE) == 1, "the niivue bundle is inlined once, unchanged"
    return text.replace(BUNDLE, "")


# ------------------------------------------------------------------------------------------
# The file
# ------------------------------------------------------------------------------------------


def test_report_is_one_offline_file(report_file):
    path, summary = report_file
    assert sorted(p.name for p in path.parent.iterdir()) == [path.name]  # one file, no temp left
    text = path.read_text(encoding="utf-8")
    rest = _outside_bundle(text)
    assert "http://" not in rest and "https://" not in rest
    resources = re.findall(r"""<(?:script|img|link|iframe|source|embed|object)\b[^>]*?\s(?:src|href|data)\s*=\s*["']([^"']*)""",
                           rest, re.I)
    assert resources and all(value.startswith("data:") for value in resources), [v[:40] for v in resources]
    assert not re.search(r"<(?:link|iframe|base)\b", rest, re.I)
    assert not re.search(r"\bfetch\s*\(|XMLHttpRequest|@import|url\(", rest)
    assert re.findall(r'<img[^>]*src="data:image/png;base64,', rest)
    size = path.stat().st_size
    assert size < len(BUNDLE) + 1_500_000, size
    assert summary == ReportSummary(UID, path, 2, 0.93, 2, 1)


def test_report_content(report_file):
    text = _outside_bundle(report_file[0].read_text(encoding="utf-8"))
    assert "SHOULD NOT APPEAR" not in text and "PatientName" not in text  # only whitelisted metadata
    for shown in ("ACME", "B30f", "2.50 mm", "0.800 × 0.700 × 2.500 mm", "64 × 64 × 40", "nodule_unet2d", "ab" * 8):
        assert shown in text, shown
    assert len(re.findall(r'<tr data-finding="\d+"', text)) == 2
    assert len(re.findall(r'<tr data-reference="\d+"', text)) == 2
    assert "hit by 1" in text and "missed" in text
    assert "No findings above the threshold" not in text
    views = re.findall(r'<figure class="(full|zoom)">', text)
    assert views.count("full") == 6 and views.count("zoom") == 6


def test_finding_views_show_the_mask_outline(synthetic):
    """The outline colour of finding 1 is drawn in its axial views, and the pixels are square in mm."""
    from PIL import Image
    import io

    from medcad.reports import report_views

    scan, findings, masks = synthetic
    volume = report_views.oriented(scan.hu, scan.direction, scan.spacing_xyz)
    points = np.stack(np.unravel_index(masks.voxels[0], scan.shape_irc), axis=1)
    views = report_views.finding_views(volume, volume.to_canonical(np.asarray(CENTRES_IRC[0], float)), 1,
                                       np.rint(volume.to_canonical(points)).astype(int))
    assert [(v.plane, v.zoomed) for v in views] == [(p, z) for z in (False, True) for p in ("axial", "coronal", "sagittal")]
    colour = report_views.finding_colour_index(1)
    for view in views:
        pixels = np.asarray(Image.open(io.BytesIO(view.png)))
        assert pixels.shape == (view.height, view.width)
        assert (pixels == colour).sum() > 10, view.plane
    coronal = views[1]  # 64 columns x 0.8 mm wide, 40 slices x 2.5 mm high
    assert coronal.height / coronal.width == pytest.approx((40 * 2.5) / (64 * 0.8), rel=0.03)


def test_no_findings_report(empty_report_file):
    text = _outside_bundle(empty_report_file.read_text(encoding="utf-8"))
    assert "No findings above the threshold" in text
    assert not re.search(r"<tr data-finding=", text)
    assert "Overview" in text and 'id="viewer-canvas"' in text and "0.800 × 0.700 × 2.500 mm" in text


def test_masks_absent_marks_spheres(tmp_path, synthetic):
    """Without masks the label map still marks each finding (a sphere of its diameter)."""
    scan, findings, _ = synthetic
    viewer = viewer_volume(scan, [f.center_xyz for f in findings])
    labels = html_report._label_volume(viewer, scan, findings, None)
    for k, finding in enumerate(findings, start=1):
        centre = np.rint(viewer.geometry.xyz_to_irc(finding.center_xyz)).astype(int)
        assert labels[tuple(centre)] == k
    write_report(tmp_path / "r.html", scan, findings, None, ())
    assert (tmp_path / "r.html").stat().st_size > 0


@pytest.mark.parametrize("direction", [
    np.eye(3),
    np.diag([1.0, -1.0, -1.0]),                      # rows and slices flipped
    np.array([[0.0, 0.0, 1.0], [1.0, 0.0, 0.0], [0.0, 1.0, 0.0]]),  # a permutation (sagittal-like)
    np.array([[np.cos(0.3), -np.sin(0.3), 0.0], [np.sin(0.3), np.cos(0.3), 0.0], [0.0, 0.0, 1.0]]),  # oblique
])
@pytest.mark.parametrize("use_qform", [False, True])
def test_nifti_places_voxels_like_the_scan(tmp_path, direction, use_qform):
    """SimpleITK (LPS) reads the NIfTI bytes back with the scan's exact geometry, from sform or qform."""
    import SimpleITK as sitk

    from medcad.geometry import VolumeGeometry

    array = np.arange(5 * 6 * 7, dtype=np.int16).reshape(5, 6, 7)
    geometry = VolumeGeometry(array.shape, (12.5, -30.0, 101.0), (0.7, 0.9, 2.5), direction)
    data = bytearray(nifti1_bytes(array, geometry, slope=2.0, intercept=-5.0))
    if use_qform:
        data[254:256] = b"\0\0"  # sform_code 0: readers must use the qform
    path = tmp_path / "volume.nii"
    path.write_bytes(bytes(data))
    image = sitk.ReadImage(str(path))
    assert np.allclose(image.GetOrigin(), geometry.origin_xyz, atol=1e-3)
    assert np.allclose(image.GetSpacing(), geometry.spacing_xyz, atol=1e-5)
    assert np.allclose(np.reshape(image.GetDirection(), (3, 3)), direction, atol=1e-5)
    assert np.array_equal(sitk.GetArrayFromImage(image), array * 2.0 - 5.0)


def test_viewer_volume_is_reduced_and_placed(synthetic):
    """Block averaging keeps world positions: a finding's centre maps onto its sphere in the viewer grid."""
    scan, findings, _ = synthetic
    big = Scan.from_array(np.repeat(np.repeat(scan.hu, 3, axis=1), 3, axis=2), origin_xyz=ORIGIN,
                          spacing_xyz=(SPACING[0] / 3, SPACING[1] / 3, SPACING[2]))
    old = html_report.VIEWER_MAX_VOXELS
    html_report.VIEWER_MAX_VOXELS = 200_000
    try:
        viewer = viewer_volume(big, [f.center_xyz for f in findings])
    finally:
        html_report.VIEWER_MAX_VOXELS = old
    assert viewer.hu.size <= 200_000 and viewer.factors[1] == viewer.factors[2] > 1
    for finding in findings:
        irc = np.rint(viewer.geometry.xyz_to_irc(finding.center_xyz)).astype(int)
        assert viewer.hu[tuple(irc)] > -200
    values = viewer.quantized().astype(np.float32) * 8 - 1024
    assert np.abs(values - np.clip(viewer.hu, -1024, 1016)).max() <= 4.01


def test_path_is_a_folder(tmp_path, synthetic):
    scan, findings, masks = synthetic
    with pytest.raises(InputError) as error:
        write_report(tmp_path, scan, findings, masks, MODELS)
    assert str(tmp_path) in str(error.value)


def test_parent_cannot_be_created(tmp_path, synthetic):
    scan, findings, masks = synthetic
    blocker = tmp_path / "file.txt"
    blocker.write_text("not a folder")
    target = blocker / "report.html"
    with pytest.raises(InputError) as error:
        write_report(target, scan, findings, masks, MODELS)
    assert "file.txt" in str(error.value)
    assert blocker.read_text() == "not a folder"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file.txt"]


def test_nothing_half_written(tmp_path, synthetic, monkeypatch):
    """A failure while the page is made leaves the old file (or none) and no temporary file."""
    scan, findings, masks = synthetic
    target = tmp_path / "report.html"
    target.write_text("old report")

    def broken(*args, **kwargs):
        raise RuntimeError("disk on fire")

    monkeypatch.setattr(html_report, "write_text_atomic",
                        lambda path, text: _write_then_fail(path, text))
    with pytest.raises(RuntimeError):
        write_report(target, scan, findings, masks, MODELS)
    assert target.read_text() == "old report"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["report.html"]
    monkeypatch.setattr(html_report.views, "finding_views", broken)
    with pytest.raises(RuntimeError):
        write_report(tmp_path / "new.html", scan, findings, masks, MODELS)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["report.html"]


def _write_then_fail(path, text):
    """The real atomic writer, interrupted after half the text."""
    from medcad.io.atomic import atomic_path

    with atomic_path(path) as tmp:
        tmp.write_text(text[: len(text) // 2])
        raise RuntimeError("interrupted")


def test_index_links_every_report(tmp_path, report_file, empty_report_file):
    first = report_file[1]
    second = ReportSummary("1.2.3.4", empty_report_file, 0, None, 0, 0)
    moved = tmp_path / "reports" / "sub dir" / "b.html"
    moved.parent.mkdir(parents=True)
    shutil.copy(empty_report_file, moved)
    third = ReportSummary("1.2.3.5", moved, 3, 0.5, 4, 2)
    index = write_report_index(tmp_path / "reports", [first, second, third])
    assert index == tmp_path / "reports" / "index.html"
    text = index.read_text()
    hrefs = re.findall(r'<a href="([^"]+)"', text)
    assert len(hrefs) == 3
    from urllib.parse import unquote

    for href, summary in zip(hrefs, (first, second, third)):
        assert not href.startswith(("/", "file:", "http"))
        assert (index.parent / unquote(href)).resolve() == Path(summary.path).resolve()
    assert hrefs[2] == "sub%20dir/b.html"
    assert UID in text and "0.930" in text and "2 / 4" in text and "1 / 2" in text


# ------------------------------------------------------------------------------------------
# In a browser
# ------------------------------------------------------------------------------------------

CHROMIUM, CHROMEDRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"
#: Software WebGL2 (SwiftShader) for headless Chromium without a GPU.
WEBGL_FLAGS = ("--use-angle=swiftshader", "--enable-unsafe-swiftshader", "--ignore-gpu-blocklist")


def _driver(extra=()):
    if not (Path(CHROMIUM).exists() and Path(CHROMEDRIVER).exists()):
        pytest.skip(f"headless Chromium not installed ({CHROMIUM} and {CHROMEDRIVER} are needed)")
    webdriver = pytest.importorskip("selenium.webdriver")
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1400,1000",
                 *WEBGL_FLAGS, *extra):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    return webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)


def _open(driver, path: Path, timeout: float = 90.0) -> None:
    from selenium.webdriver.support.ui import WebDriverWait

    driver.get(path.resolve().as_uri())
    WebDriverWait(driver, timeout).until(
        lambda d: d.execute_script("return document.body.dataset.viewerReady || document.body.dataset.viewerError"))


def _severe(driver) -> list[str]:
    return [entry["message"] for entry in driver.get_log("browser") if entry["level"] == "SEVERE"]


@pytest.fixture(scope="module")
def browser():
    driver = _driver()
    yield driver
    driver.quit()


@pytest.fixture(scope="module")
def _first_load_errors():
    return {}


@pytest.fixture
def opened(browser, report_file, _first_load_errors):
    """The browser showing the synthetic report (opened again if a test went elsewhere)."""
    uri = report_file[0].resolve().as_uri()
    if browser.current_url != uri:
        _open(browser, report_file[0])
        _first_load_errors.setdefault("severe", _severe(browser))
    return browser, _first_load_errors["severe"]


def test_viewer_loads_without_errors(opened):
    driver, severe = opened
    assert driver.execute_script("return document.body.dataset.viewerError || null") is None
    assert driver.execute_script("return document.body.dataset.viewerReady") == "1"
    assert severe == []
    assert driver.execute_script("return window.medcadViewer.nv.volumes.length") == 2


def test_clicking_a_row_moves_the_crosshair(opened, synthetic):
    from selenium.webdriver.common.by import By

    driver, _ = opened
    scan, findings, _ = synthetic
    rows = driver.find_elements(By.CSS_SELECTOR, "#findings-table tbody tr")
    assert [r.get_attribute("data-finding") for r in rows] == ["1", "2"]
    driver.find_element(By.CSS_SELECTOR, '#findings-table tbody tr[data-finding="2"]').click()
    assert driver.execute_script("return window.medcadViewer.currentFinding()") == 2
    crosshair = np.asarray(driver.execute_script("return window.medcadViewer.crosshairMM()"))
    expected = np.asarray(findings[1].center_xyz)
    assert np.all(np.abs(crosshair - expected) <= 2 * np.asarray(SPACING) + 1e-3), (crosshair, expected)
    # the viewer's own voxel there: inside sphere 2 and labelled 2 (a wrong NIfTI affine would miss it)
    values = driver.execute_script("return window.medcadViewer.valuesAtCrosshair()")
    assert values["label"] == 2 and values["hu"] > -200, values
    driver.find_element(By.CSS_SELECTOR, '#findings-table tbody tr[data-finding="1"]').click()
    values = driver.execute_script("return window.medcadViewer.valuesAtCrosshair()")
    assert values["label"] == 1 and values["hu"] > -200, values
    assert np.allclose(driver.execute_script("return window.medcadViewer.crosshairMM()"), findings[0].center_xyz,
                       atol=2 * max(SPACING))
    assert _severe(driver) == []


def test_window_presets(opened):
    driver, _ = opened
    driver.find_element("css selector", 'button[data-window="mediastinum"]').click()
    low, high = driver.execute_script("var v = window.medcadViewer.nv.volumes[0]; return [v.cal_min, v.cal_max]")
    assert (low, high) == pytest.approx((-125.0, 225.0))
    driver.find_element("css selector", 'button[data-window="lung"]').click()
    low, high = driver.execute_script("var v = window.medcadViewer.nv.volumes[0]; return [v.cal_min, v.cal_max]")
    assert (low, high) == pytest.approx((-1000.0, 400.0))


def test_sorting_reorders_rows(opened):
    from selenium.webdriver.common.by import By

    driver, _ = opened

    def order():
        return [r.get_attribute("data-finding") for r in
                driver.find_elements(By.CSS_SELECTOR, "#findings-table tbody tr")]

    header = driver.find_elements(By.CSS_SELECTOR, "#findings-table thead th")[1]  # nodule probability
    header.click()
    assert order() == ["2", "1"] and header.get_attribute("aria-sort") == "ascending"
    header.click()
    assert order() == ["1", "2"] and header.get_attribute("aria-sort") == "descending"
    driver.find_elements(By.CSS_SELECTOR, "#findings-table thead th")[3].click()  # diameter ascending
    assert order() == ["2", "1"]


def test_screenshot_shows_the_scan(opened, tmp_path):
    import matplotlib.image

    driver, _ = opened
    driver.execute_script("document.querySelector('.viewer-card').scrollIntoView({block: 'start'});")
    time.sleep(0.3)
    box = driver.execute_script(
        "var r = document.getElementById('viewer-canvas').getBoundingClientRect();"
        "return [r.left, r.top, r.width, r.height, window.devicePixelRatio];")
    shot = tmp_path / "shot.png"
    assert driver.save_screenshot(str(shot))
    pixels = matplotlib.image.imread(str(shot))
    left, top, width, height, ratio = (float(v) for v in box)
    region = pixels[int(max(top, 0) * ratio):int((top + height) * ratio), int(left * ratio):int((left + width) * ratio), :3]
    assert region.size > 100 * 100 * 3
    assert region.std() > 0.05, region.std()


def test_empty_report_in_browser(browser, empty_report_file):
    from selenium.webdriver.common.by import By

    _open(browser, empty_report_file)
    assert browser.execute_script("return document.body.dataset.viewerReady") == "1"
    assert "No findings above the threshold" in browser.find_element(By.TAG_NAME, "body").text
    assert browser.find_elements(By.CSS_SELECTOR, "#findings-table tbody tr") == []
    assert browser.execute_script("return window.medcadViewer.nv.volumes.length") == 1
    assert _severe(browser) == []


@pytest.mark.parametrize("direction", [
    np.diag([1.0, -1.0, -1.0]),
    np.array([[0.0, 0.0, 1.0], [1.0, 0.0, 0.0], [0.0, 1.0, 0.0]]),
    np.array([[np.cos(0.3), -np.sin(0.3), 0.0], [np.sin(0.3), np.cos(0.3), 0.0], [0.0, 0.0, 1.0]]),
], ids=["flipped", "permuted", "oblique"])
def test_viewer_finds_the_findings_in_any_orientation(browser, tmp_path, synthetic, direction):
    """LPS -> RAS for flipped, permuted and oblique grids: the crosshair lands in each finding's voxels."""
    from dataclasses import replace

    scan, findings, masks = synthetic
    turned = Scan.from_array(scan.hu, origin_xyz=ORIGIN, spacing_xyz=SPACING, direction=direction, series_uid=UID)
    moved = [replace(f, center_xyz=tuple(float(v) for v in turned.irc_to_xyz(f.center_irc))) for f in findings]
    path = tmp_path / "turned.html"
    write_report(path, turned, moved, masks, MODELS)
    _open(browser, path)
    assert browser.execute_script("return document.body.dataset.viewerReady") == "1"
    for k, finding in enumerate(moved, start=1):
        target = browser.execute_script(f"return window.medcadViewer.gotoFinding({k})")
        assert np.allclose(target, finding.center_xyz)
        values = browser.execute_script("return window.medcadViewer.valuesAtCrosshair()")
        assert values["label"] == k and values["hu"] > -200, (k, values)
    assert _severe(browser) == []


def test_without_webgl_the_page_says_so(report_file):
    driver = _driver(extra=("--disable-webgl", "--disable-3d-apis"))
    try:
        _open(driver, report_file[0])
        error = driver.execute_script("return document.body.dataset.viewerError || null")
        assert error and "WebGL2" in error
        assert "WebGL2" in driver.find_element("id", "viewer-message").text
        assert driver.find_elements("css selector", "#findings-table tbody tr")  # the rest still works
        assert _severe(driver) == []
    finally:
        driver.quit()


# ------------------------------------------------------------------------------------------
# A real-size scan
# ------------------------------------------------------------------------------------------


@pytest.mark.realdata
def test_real_scan_report_size_and_time(tmp_path, lidc_scan):
    """LIDC-IDRI-0001 (512 x 512 x 133) with the LUNA16 nodule as a finding: small and fast."""
    scan = lidc_scan
    centre = (56.20840547, 86.34341278, -115.8675792)
    irc = scan.xyz_to_irc(centre)
    z, y, x = np.indices(scan.shape_irc, sparse=True)
    sp = scan.spacing_xyz
    near = ((z - irc[0]) * sp[2]) ** 2 + ((y - irc[1]) * sp[1]) ** 2 + ((x - irc[2]) * sp[0]) ** 2 <= 12.0**2
    labels = (near & (scan.hu > -400)).astype(np.uint16)
    finding = Finding(scan.series_uid, centre, 0.97, 0.8, tuple(irc), 22.0, int(labels.sum()))
    started = time.perf_counter()
    summary = write_report(tmp_path / "lidc.html", scan, [finding], FindingMasks.from_label_map(labels), MODELS,
                           [LunaNodule(scan.series_uid, centre, 23.35064438)], threshold=0.5)
    elapsed = time.perf_counter() - started
    size = summary.path.stat().st_size
    assert summary.n_references_hit == 1
    assert size < 15_000_000, size
    assert elapsed < 10.0, elapsed
    text = summary.path.read_text()
    nifti = gzip.decompress(base64.b64decode(re.search(r'id="scan-nifti">([^<]+)<', text).group(1)))
    assert len(nifti) - 352 <= html_report.VIEWER_MAX_VOXELS
