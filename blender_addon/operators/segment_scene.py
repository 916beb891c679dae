"""Segment Scene: render views of the open scene (the dataset tools' code), submit them to the job server.

First the server is pinged (a dead server or one Blender may not contact is reported at once, before any
rendering). Rendering has to run on the main thread (bpy cannot render elsewhere). From the UI the operator
is modal: it waits for the ping's answer, then renders ONE view per timer event, so Blender redraws, shows
progress and takes clicks (Cancel, Esc) between views; from scripts and headless sessions ``execute`` pings
and renders all views at once. Everything after the submit runs in the client thread, followed by
:func:`blender_addon.runtime.pump` on a timer.
"""

from __future__ import annotations

import dataclasses
import queue

import bpy
from bpy.props import BoolProperty, EnumProperty, IntProperty

from .. import jobstate, runtime
from . import modal
from backend.wire import job_progress, presets
from backend.wire import protocol as P
from dataset_tools.config import RenderConfig
from dataset_tools.errors import DatasetError
from ..client import CLIENT_TOKEN, JobThread, drain, network_refusal, probe_outcome, probe_pong, probe_server
from ..messages import SegmentOptions, build_submit
from ..preferences import OPERATOR_ENGINE_ITEMS, client_config, get_preferences, operator_engine
from ..properties import state_of

#: Longest wait for the server's answer to the ping before rendering.
PROBE_S = 1.5


def render_config(prefs, views: int = 0, resolution: int = 0, samples: int = 0,
                  engine: str = "PREFERENCES") -> RenderConfig:
    """The render of Segment Scene: ``views`` orbit views at ``resolution``² (0 / "PREFERENCES" = preferences)."""
    res = resolution or prefs.resolution
    return RenderConfig(n_train=views or prefs.views, n_val=0, n_test=0, width=res, height=res,
                        samples=samples or prefs.samples, engine=operator_engine(engine or "PREFERENCES", prefs),
                        rotations=())


class USEG_OT_segment_scene(bpy.types.Operator):
    """Render views of this scene and send them to the segmentation server; the result arrives as a coloured point cloud"""

    bl_idname = "useg.segment_scene"
    bl_label = "Segment Scene"
    bl_options = {"REGISTER"}

    views: IntProperty(name="Views", default=0, min=0, max=2000, description="0: from the preferences")
    resolution: IntProperty(name="Resolution", default=0, min=0, max=4096, description="0: from the preferences")
    samples: IntProperty(name="Samples", default=0, min=0, max=4096, description="0: from the preferences")
    engine: EnumProperty(name="Engine", items=OPERATOR_ENGINE_ITEMS, default="PREFERENCES")
    iterations: IntProperty(name="Iterations", default=0, min=0, description="Training iterations; 0: the preset's")
    selected_only: BoolProperty(name="Selected Only", default=False,
                                description="Render and frame only the selected objects (and their children and "
                                            "instanced collections); the others are hidden from the render meanwhile")

    @classmethod
    def poll(cls, context):
        if runtime.SESSION.busy:
            cls.poll_message_set("A segmentation job is running (Cancel it first)")
            return False
        if context.scene is None or not any(o.type in {"MESH", "CURVE", "SURFACE", "META", "FONT", "EMPTY"}
                                            for o in context.scene.objects):
            cls.poll_message_set("The scene has nothing to segment")
            return False
        return True

    def _chosen(self, context) -> tuple[int, int, str, int | None]:
        """(views, resolution, preset or "auto", iterations or None): the operator's, else the sidebar
        panel's (the scene's), else the preferences'."""
        prefs = get_preferences(context)
        props = state_of(context.scene)
        preset = props.preset if props.preset != "PREFERENCES" else prefs.preset
        return (self.views or props.views or prefs.views, self.resolution or props.resolution or prefs.resolution,
                preset, self.iterations or props.iterations or None)

    def _settings(self, context):
        """(render config, job options) from the operator, the panel and the preferences; reports and returns
        None when they are invalid. The options' preset is checked again once the server says its device."""
        prefs = get_preferences(context)
        views, resolution, preset, iterations = self._chosen(context)
        try:
            config = render_config(prefs, views, resolution, self.samples, self.engine)
            config.validate()
            options = SegmentOptions(preset=presets.choose_preset(preset, "")[0], mask_source=prefs.mask_source,
                                     max_points=prefs.max_points, iterations=iterations)
            options.job_options()
        except (DatasetError, P.ProtocolError, ValueError) as e:
            self.report({"ERROR"}, f"Invalid settings: {e}")
            return None
        refusal = network_refusal(prefs.server_address, bool(getattr(bpy.app, "online_access", True)))
        if refusal is not None:
            self._server_failed(context.scene, "offline", refusal)
            return None
        return config, options

    def _server_failed(self, scene, code: str, message: str) -> None:
        """The server may not or cannot be reached: the job fails before anything is rendered."""
        runtime.set_state(scene, jobstate.fail(jobstate.JobState(), code, message))
        self.report({"ERROR"}, f"Segment Scene: {message}")

    def _plan(self, context, config, options: SegmentOptions, pong: P.Pong | None) -> SegmentOptions:
        """The job as it fits the server that answered: the preset (``auto``: from its device), the plan of the
        progress bar, and the estimate said before rendering. Returns the options to submit."""
        prefs = get_preferences(context)
        _, _, chosen, _ = self._chosen(context)
        device = pong.device if pong is not None else ""
        preset, warning = presets.choose_preset(chosen, device)
        options = dataclasses.replace(options, preset=preset)
        self._plan_value = job_progress.JobPlan(
            views=config.n_train, resolution=config.width, iterations=options.iterations or presets.preset_iterations(preset),
            preset=preset, engine=config.engine, samples=config.samples, device=device or "cpu",
            max_points=int(prefs.max_points))
        estimate = job_progress.estimate_line(self._plan_value, pong.cpu_cores if pong else 0, pong.load if pong else 0.0)
        state_of(context.scene).estimate = estimate
        self.report({"INFO"}, f"Segment Scene: {estimate}")
        if warning:
            self.report({"WARNING"}, f"Segment Scene: {warning}")
        return options

    def _hide_others(self, context) -> None:
        """Selected Only: hide every other object of the view layer from the render (restored by :meth:`_restore`)."""
        self._hidden = []
        if not self.selected_only:
            return
        keep = set()
        todo = list(context.selected_objects)
        while todo:
            o = todo.pop()
            if o in keep:
                continue
            keep.add(o)
            todo.extend(o.children)
            if o.instance_type == "COLLECTION" and o.instance_collection is not None:
                todo.extend(o.instance_collection.all_objects)
        if not keep:
            raise RuntimeError("Selected Only: nothing is selected")
        for o in context.view_layer.objects:
            if o not in keep and not o.hide_render and o.type != "CAMERA" and o.type != "LIGHT":
                o.hide_render = True
                self._hidden.append(o.name)

    def _restore(self) -> None:
        for name in getattr(self, "_hidden", ()):
            o = bpy.data.objects.get(name)
            if o is not None:
                o.hide_render = False
        self._hidden = []

    def _begin(self, context, config):
        from dataset_tools.render import render_views_steps

        self._scene = context.scene
        self._hide_others(context)
        runtime.set_state(self._scene, jobstate.start_rendering(runtime.SESSION.state, config.n_train,
                                                                plan=getattr(self, "_plan_value", None)))
        self._steps = render_views_steps(self._scene, config)

    def _step(self) -> bool:
        """Render one view; True when all are done (``self._views`` then holds them)."""
        try:
            done, total = next(self._steps)
        except StopIteration as stop:
            self._views = stop.value
            return True
        runtime.set_state(self._scene, jobstate.render_progress(runtime.SESSION.state, done, total))
        return False

    def _fail(self, error: Exception) -> set[str]:
        runtime.set_state(self._scene, jobstate.fail(runtime.SESSION.state, "render_failed", str(error)))
        self.report({"ERROR"}, f"Rendering the views failed: {error}")
        return {"CANCELLED"}

    def _submit(self, context, options) -> set[str]:
        prefs = get_preferences(context)
        v = self._views
        try:
            submit = build_submit(v.rgba, v.c2w, v.K, v.depth, options, client_token=CLIENT_TOKEN)
        except P.ProtocolError as e:
            return self._fail(e)
        runtime.start(self._scene, submit, client_config(prefs))
        from dataset_tools.coverage import views_coverage

        coverage = views_coverage(v)
        self.report({"INFO"}, f"Rendered {len(v.c2w)} views; sending them to {prefs.server_address}; "
                              f"{coverage.summary_line()}")
        warning = coverage.warning_line()
        if warning:
            self.report({"WARNING"}, f"Segment Scene: {warning}")
        return {"FINISHED"}

    def execute(self, context):
        settings = self._settings(context)
        if settings is None:
            return {"CANCELLED"}
        config, options = settings
        problem, pong = probe_server(client_config(get_preferences(context)), PROBE_S)
        if problem is not None:
            self._server_failed(context.scene, "server_unavailable", problem)
            return {"CANCELLED"}
        options = self._plan(context, config, options, pong)
        wm = context.window_manager
        wm.progress_begin(0, config.n_train)
        try:
            self._begin(context, config)
            while not self._step():
                wm.progress_update(runtime.SESSION.state.step)
        except (DatasetError, RuntimeError, OSError) as e:
            return self._fail(e)
        finally:
            self._restore()
            wm.progress_end()
        return self._submit(context, options)

    def invoke(self, context, event):
        if bpy.app.background or context.window is None:
            return self.execute(context)
        settings = self._settings(context)
        if settings is None:
            return {"CANCELLED"}
        self._config, self._options = settings
        config = client_config(get_preferences(context))
        self._probe_events: queue.Queue | None = queue.Queue()
        self._probe = JobThread(dataclasses.replace(config, timeout_s=min(config.timeout_s, PROBE_S)), None,
                                self._probe_events)
        self._probe.start()
        try:
            self._begin(context, self._config)
        except (DatasetError, RuntimeError, OSError) as e:
            self._restore()
            return self._fail(e)
        runtime.set_state(self._scene, jobstate.transition(runtime.SESSION.state, jobstate.Phase.RENDERING,
                                                           message="checking the server…"))
        return modal.start(self, context)

    def _end_modal(self, context) -> None:
        self._restore()
        modal.end(self, context)

    def modal(self, context, event):
        cancelled = runtime.SESSION.state.phase == jobstate.Phase.CANCELLED
        if event.type == "ESC" or cancelled:
            self._probe.stop()
            self._steps.close()  # restores the scene
            if not cancelled:
                runtime.set_state(self._scene, jobstate.request_cancel(runtime.SESSION.state))
            self._end_modal(context)
            self.report({"WARNING"}, "Segment Scene cancelled while rendering")
            return {"CANCELLED"}
        if not modal.is_own_tick(self, event):
            return {"PASS_THROUGH"}
        if self._probe_events is not None:  # the ping first: render only for a server that answers
            if self._probe.is_alive():
                return {"RUNNING_MODAL"}
            seen = drain(self._probe_events)
            problem = probe_outcome(seen)
            self._probe_events = None
            if problem is not None:
                self._steps.close()
                self._end_modal(context)
                runtime.set_state(self._scene, jobstate.fail(runtime.SESSION.state, "server_unavailable", problem))
                self.report({"ERROR"}, f"Segment Scene: {problem}")
                return {"CANCELLED"}
            self._options = self._plan(context, self._config, self._options, probe_pong(seen))
            runtime.set_state(self._scene, jobstate.start_rendering(runtime.SESSION.state, self._config.n_train,
                                                                    plan=self._plan_value))
        try:
            finished = self._step()
        except (DatasetError, RuntimeError, OSError) as e:
            self._end_modal(context)
            return self._fail(e)
        if not finished:
            return {"RUNNING_MODAL"}
        self._end_modal(context)
        return self._submit(context, self._options)
