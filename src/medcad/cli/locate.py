"""``medcad locate SCAN``: the L3 slice of a CT (index, z in mm, confidence) and a MIP PNG with the line."""

from __future__ import annotations

from pathlib import Path

import typer


def register(app: typer.Typer) -> None:
    app.command("locate")(locate)


def locate(
    scan_path: Path = typer.Argument(..., help="CT: DICOM folder or file, .mhd, .mha, .nrrd, .nii(.gz)."),
    model: list[Path] = typer.Option(..., "--model", help="L3 model folder, or a run folder of medcad train l3 "
                                                          "(all its fold models are averaged); repeatable."),
    png: Path = typer.Option(None, "--png", help="Where to write the MIPs with the L3 line (default: SCAN_NAME_l3.png)."),
    views: str = typer.Option(None, "--views", help="Use only these views' models: frontal, sagittal or both."),
    labels: Path = typer.Option(None, "--labels", help="A vertebra segmentation on the scan's grid (L3 = 29): "
                                                       "also print the reference L3 and the error."),
    threads: int = typer.Option(1, "--threads", help="CPU threads for torch."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON for machines."),
) -> None:
    """Print the L3 slice index, its z in mm and the confidence; write the MIP PNG with the predicted line."""
    import json

    import torch

    from medcad.cli.image_options import parse_names
    from medcad.data.l3 import l3_z_from_segmentation
    from medcad.errors import InputError
    from medcad.io import read_scan
    from medcad.tasks.l3_locate import MarkedRow, load_l3_models, locate as locate_l3, save_mip_png

    torch.set_num_threads(max(threads, 1))
    models = load_l3_models(model)
    chosen = parse_names(views)
    if chosen:
        models = [m for m in models if m.view in chosen]
        if not models:
            raise InputError(None, f"none of the models reads the {', '.join(chosen)} view")
    scan = read_scan(scan_path)
    location, mips = locate_l3(scan, models)
    geometry = next(iter(mips.values())).geometry
    marks = [MarkedRow(location.row, f"L3 (predicted, conf {location.confidence:.2f})", "red")]
    reference = None
    if labels is not None:
        reference_z = l3_z_from_segmentation(read_scan(labels))
        reference = {"z_mm": reference_z, "slice_index": int(geometry.nearest_slice(geometry.z_mm_to_row(reference_z))),
                     "error_mm": abs(location.z_mm - reference_z)}
        marks.append(MarkedRow(float(geometry.z_mm_to_row(reference_z)), "L3 (reference labels)", "lime"))
    png_path = png if png is not None else Path(f"{_stem(scan_path)}_l3.png")
    title = f"{scan_path.name}: L3 slice {location.slice_index}, z {location.z_mm:.1f} mm"
    save_mip_png({view: mip.image for view, mip in mips.items() if view in location.views.split("+")},
                 marks, png_path, title + (" (LOW CONFIDENCE)" if location.low_confidence else ""))
    document = {"scan": str(scan_path), "slice_index": location.slice_index, "z_mm": round(location.z_mm, 2),
                "confidence": round(location.confidence, 4), "low_confidence": location.low_confidence,
                "reason": location.reason, "views": location.views, "models": location.models,
                "per_view": {v: {"slice_index": int(geometry.nearest_slice(e.row)),
                                 "z_mm": round(float(geometry.row_to_z_mm(e.row)), 2),
                                 "confidence": round(e.confidence, 4)} for v, e in location.per_view.items()},
                "png": str(png_path)}
    if reference is not None:
        document["reference"] = {k: round(v, 2) if isinstance(v, float) else v for k, v in reference.items()}
    if as_json:
        typer.echo(json.dumps(document, indent=2))
        return
    from rich.console import Console

    console = Console()
    console.print(f"L3 slice index {location.slice_index}  z {location.z_mm:.1f} mm  confidence "
                  f"{location.confidence:.2f}  ({location.views}, {location.models} model(s))")
    for view, values in document["per_view"].items():
        console.print(f"  {view}: slice {values['slice_index']}, z {values['z_mm']:.1f} mm, "
                      f"confidence {values['confidence']:.2f}")
    if location.low_confidence:
        console.print(f"[bold red]LOW CONFIDENCE[/]: {location.reason}")
    if reference is not None:
        console.print(f"reference L3 (labels): slice {reference['slice_index']}, z {reference['z_mm']:.1f} mm; "
                      f"error {reference['error_mm']:.1f} mm")
    console.print(f"MIPs with the L3 line: {png_path}")


def _stem(path: Path) -> str:
    name = path.name
    for suffix in (".nii.gz", ".nii", ".mhd", ".mha", ".nrrd", ".dcm"):
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return name
