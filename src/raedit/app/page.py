"""The page of `raedit app`: three tabs (Sample, Reconstruct, Compare) over `raedit.app.actions`. Every failure
becomes one line in the tab's status box, and the app keeps running."""

from __future__ import annotations

import logging
import os
import tempfile
import uuid
from pathlib import Path
from typing import Callable

import numpy as np

from raedit.app.actions import GUIDANCE, SampleRequest, load_rae, model_class_names, reconstruct_files, run_sample
from raedit.app.catalog import Catalog
from raedit.core.errors import RaeditError
from raedit.diffusion.samplers import SAMPLERS

logger = logging.getLogger(__name__)

MAX_IMAGES = 200
# Columns of each gallery. Gradio makes them 100 px wide whatever the page's width: they share it instead.
GALLERY_COLUMNS = {"sample-gallery": 8, "reconstruct-gallery": 4, "compare-a-gallery": 5, "compare-b-gallery": 5}
CSS = "\n".join(f"#{name} .grid-container {{ grid-template-columns: repeat({columns}, minmax(0, 1fr)) !important; }}"
                for name, columns in GALLERY_COLUMNS.items())
GAP = 4  # pixels between an original and its reconstruction


def _gradio():
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")  # no calls home from an offline machine
    try:
        import gradio
    except ImportError:
        raise RaeditError("raedit app needs Gradio: pip install 'raedit[app]' (make install includes it)") from None
    return gradio


def failure_message(error: Exception) -> str:
    """One line for the page: a raedit error as it is, anything else with its type."""
    if isinstance(error, RaeditError):
        return f"**Error:** {error}"
    first_line = (str(error).strip().splitlines() or [""])[0]
    return f"**Error:** {type(error).__name__}: {first_line}"


def class_choices(model: str | None) -> tuple[list[tuple[str, int]], str]:
    """(name, id) pairs of the model's classes, and a status line (empty, or why there are none)."""
    if not model:
        return [], ""
    try:
        return [(f"{index}: {name}", index) for index, name in enumerate(model_class_names(model))], ""
    except Exception as error:  # the page shows why the model does not load
        return [], failure_message(error)


def side_by_side(original: np.ndarray, reconstruction: np.ndarray) -> np.ndarray:
    gap = np.full((original.shape[0], GAP, 3), 255, np.uint8)
    return np.concatenate([original, gap, reconstruction], axis=1)


class Page:
    """The handlers of the page, writing each request's files into its own folder under `work_dir`."""

    def __init__(self, work_dir: Path) -> None:
        self.work_dir = work_dir

    def new_folder(self) -> Path:
        return self.work_dir / uuid.uuid4().hex[:12]

    def sample(self, request: SampleRequest, progress: Callable[[float], None]):
        """(status, gallery, command, files) of one sampling request."""
        try:
            result = run_sample(request, self.new_folder(), progress)
        except Exception as error:
            logger.info("sampling failed: %s", error)
            return failure_message(error), [], "", []
        status = f"{len(result.images)} images from {request.model}, seed {request.seed}"
        return status, result.images, result.command, [str(result.grid), str(result.npz)]

    def reconstruct(self, rae_dir: str, files: list[str] | None):
        """(status, gallery, table rows) of the uploaded images through the RAE."""
        try:
            rae = load_rae(rae_dir)
            results, problems = reconstruct_files(rae, [str(file) for file in files or []])
        except Exception as error:
            logger.info("reconstruction failed: %s", error)
            return failure_message(error), [], []
        lines = [f"{len(results)} of {len(files)} images reconstructed by {rae_dir} (left: the center crop the "
                 f"encoder saw; right: its reconstruction)"]
        lines += [f"**Error:** {problem}" for problem in problems]
        gallery = [(side_by_side(r.original, r.reconstruction), f"{r.name}: PSNR {r.psnr:.2f} dB, SSIM {r.ssim:.3f}")
                   for r in results]
        rows = [[r.name, round(r.psnr, 2), round(r.ssim, 4)] for r in results]
        return "\n\n".join(lines), gallery, rows


def build_page(catalog: Catalog, work_dir: Path | None = None):
    """The Gradio Blocks of the app."""
    gr = _gradio()
    work_dir = work_dir or Path(tempfile.mkdtemp(prefix="raedit-app-"))
    handlers = Page(work_dir)
    first_model = catalog.denoisers[0] if catalog.denoisers else None
    first_choices, first_status = class_choices(first_model)

    def gallery(label: str, element_id: str):
        return gr.Gallery(label=label, columns=GALLERY_COLUMNS[element_id], height="auto", object_fit="contain",
                          elem_id=element_id)

    def sampling_controls(prefix: str, before_guidance: Callable[[], tuple] | None = None) -> dict:
        controls = {"model": gr.Dropdown(catalog.denoisers, value=first_model, label="Model (run, saved or imported "
                                         "denoiser; or type a path)", allow_custom_value=True,
                                         elem_id=f"{prefix}-model")}
        if before_guidance is not None:
            controls["shared"] = before_guidance()
        controls["guidance"] = gr.Radio(list(GUIDANCE), value="none", label="Guidance", elem_id=f"{prefix}-guidance")
        controls["scale"] = gr.Slider(1.0, 10.0, value=1.5, step=0.01, label="Guidance scale",
                                      elem_id=f"{prefix}-scale")
        return controls

    def shared_controls(prefix: str):
        classes = gr.Dropdown(first_choices, value=[choice[1] for choice in first_choices[:10]], multiselect=True,
                              filterable=True, label="Classes (type to search)", elem_id=f"{prefix}-classes")
        with gr.Row():
            num = gr.Slider(1, MAX_IMAGES, value=10, step=1, label="Images", elem_id=f"{prefix}-num")
            seed = gr.Number(0, precision=0, label="Seed", elem_id=f"{prefix}-seed")
        with gr.Row():
            sampler = gr.Radio(list(SAMPLERS), value="euler", label="Sampler", elem_id=f"{prefix}-sampler")
            steps = gr.Slider(1, 250, value=25, step=1, label="Steps", elem_id=f"{prefix}-steps")
        return classes, num, seed, sampler, steps

    with gr.Blocks(title="raedit") as page:
        gr.Markdown("## raedit: diffusion transformers on representation autoencoders")
        with gr.Tab("Sample", elem_id="tab-sample"):
            with gr.Row():
                with gr.Column(scale=1):
                    controls = sampling_controls("sample", before_guidance=lambda: shared_controls("sample"))
                    classes, num, seed, sampler, steps = controls["shared"]
                    with gr.Row():
                        low = gr.Slider(0.0, 1.0, value=0.0, step=0.01, label="CFG from t =", elem_id="sample-low")
                        high = gr.Slider(0.0, 1.0, value=1.0, step=0.01, label="to t =", elem_id="sample-high")
                    guide = gr.Dropdown(catalog.denoisers, value=None, label="AutoGuidance guide model",
                                        allow_custom_value=True, elem_id="sample-guide")
                    sample_button = gr.Button("Sample", variant="primary", elem_id="sample-button")
                with gr.Column(scale=2):
                    sample_status = gr.Markdown(first_status, elem_id="sample-status")
                    sample_gallery = gallery("Samples", "sample-gallery")
                    command = gr.Textbox(label="The same samples from the command line", interactive=False,
                                         elem_id="sample-command")
                    downloads = gr.File(label="Downloads: the PNG grid and the ADM npz", file_count="multiple",
                                        interactive=False, elem_id="sample-files")

            def on_sample(model, guidance, scale, chosen, count, seed_value, sampler_name, step_count, t_low, t_high,
                          guide_model, progress=gr.Progress()):
                request = SampleRequest(model, list(chosen or []), count, sampler_name, step_count, guidance, scale,
                                        (t_low, t_high), guide_model or None, int(seed_value or 0))
                return handlers.sample(request, lambda share: progress(share, desc="sampling"))

            sample_button.click(on_sample, [controls["model"], controls["guidance"], controls["scale"], classes, num,
                                            seed, sampler, steps, low, high, guide],
                                [sample_status, sample_gallery, command, downloads])

            def on_model(model):
                choices, status = class_choices(model)
                return gr.update(choices=choices, value=[c[1] for c in choices[:10]]), status

            controls["model"].change(on_model, controls["model"], [classes, sample_status])

        with gr.Tab("Reconstruct", elem_id="tab-reconstruct"):
            with gr.Row():
                with gr.Column(scale=1):
                    rae = gr.Dropdown(catalog.autoencoders, value=catalog.autoencoders[0] if catalog.autoencoders
                                      else None, label="RAE (or type a path)", allow_custom_value=True,
                                      elem_id="reconstruct-rae")
                    uploads = gr.File(label="Images", file_count="multiple", elem_id="reconstruct-files")
                    reconstruct_button = gr.Button("Reconstruct", variant="primary", elem_id="reconstruct-button")
                with gr.Column(scale=2):
                    reconstruct_status = gr.Markdown(elem_id="reconstruct-status")
                    reconstruct_gallery = gallery("Original | reconstruction", "reconstruct-gallery")
                    table = gr.Dataframe(headers=["image", "PSNR (dB)", "SSIM"], interactive=False,
                                         elem_id="reconstruct-table")
            reconstruct_button.click(handlers.reconstruct, [rae, uploads],
                                     [reconstruct_status, reconstruct_gallery, table])

        with gr.Tab("Compare", elem_id="tab-compare"):
            gr.Markdown("Two settings on the same classes, seeds and steps: the same starting noise for both.")
            classes_c, num_c, seed_c, sampler_c, steps_c = shared_controls("compare")
            sides = []
            with gr.Row():
                for side in ("a", "b"):
                    with gr.Column():
                        side_controls = sampling_controls(f"compare-{side}")
                        status_side = gr.Markdown(elem_id=f"compare-{side}-status")
                        gallery_side = gallery(f"Setting {side.upper()}", f"compare-{side}-gallery")
                        command_side = gr.Textbox(label="Command", interactive=False, elem_id=f"compare-{side}-command")
                        sides.append((side_controls, status_side, gallery_side, command_side))
            compare_button = gr.Button("Compare", variant="primary", elem_id="compare-button")

            def on_compare(chosen, count, seed_value, sampler_name, step_count, model_a, guidance_a, scale_a,
                           model_b, guidance_b, scale_b, progress=gr.Progress()):
                outputs = []
                for index, (model, guidance, scale) in enumerate([(model_a, guidance_a, scale_a),
                                                                   (model_b, guidance_b, scale_b)]):
                    request = SampleRequest(model, list(chosen or []), count, sampler_name, step_count, guidance,
                                            scale, seed=int(seed_value or 0))
                    status, images, line, _ = handlers.sample(
                        request, lambda share, index=index: progress((index + share) / 2, desc="sampling"))
                    outputs += [status, images, line]
                return outputs

            (a_controls, *a_outputs), (b_controls, *b_outputs) = sides
            a_controls["model"].change(on_model, a_controls["model"], [classes_c, a_outputs[0]])
            compare_button.click(on_compare, [classes_c, num_c, seed_c, sampler_c, steps_c,
                                              a_controls["model"], a_controls["guidance"], a_controls["scale"],
                                              b_controls["model"], b_controls["guidance"], b_controls["scale"]],
                                 [*a_outputs, *b_outputs])
    return page


def launch(catalog: Catalog, host: str = "127.0.0.1", port: int = 7860) -> None:
    """Serve the page until interrupted."""
    page = build_page(catalog)
    try:
        page.queue().launch(server_name=host, server_port=port, show_error=True, css=CSS)
    except OSError as error:  # the port is taken
        raise RaeditError(f"cannot serve on {host}:{port}: {error}; choose another with --port") from None
