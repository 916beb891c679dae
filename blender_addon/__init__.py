"""Ultrametric Segmentation: a Blender extension (4.2+, 5.0) that segments the open scene hierarchically.

This file only registers. Everything else lives in modules by role: ``preferences`` (server, keys,
render defaults), ``properties`` (one PropertyGroup on the Scene), ``operators/`` (one operator per
file), ``panels`` (layout), ``runtime`` (the job session and the timer that brings the client
thread's news to the UI), ``importer`` (the result as a coloured point cloud). The bpy-free logic
(``client``, ``jobstate``, ``messages``, and the shared contract ``backend.wire``: protocol, result files,
tree cuts) is imported by those and tested with plain pytest; importing this package does not import bpy.
``backend.wire`` and ``dataset_tools`` come from the runtime wheel the built zip bundles.
"""

from __future__ import annotations


def _classes() -> tuple:
    from . import panels, preferences, properties
    from .operators import (cancel_job, import_result, mesh_segments, ping_server, render_dataset, report,
                            segment_scene, select_segment, separate_segments)

    return (
        preferences.USEG_AddonPreferences,
        properties.USEG_PG_state,
        report.USEG_OT_report,
        segment_scene.USEG_OT_segment_scene,
        cancel_job.USEG_OT_cancel_job,
        ping_server.USEG_OT_ping_server,
        render_dataset.USEG_OT_render_dataset,
        import_result.USEG_OT_import_result,
        separate_segments.USEG_OT_separate_segments,
        select_segment.USEG_OT_select_segment,
        mesh_segments.USEG_OT_transfer_segments,
        mesh_segments.USEG_OT_separate_mesh,
        panels.USEG_PT_segment,
        panels.USEG_PT_result,
        panels.USEG_PT_dataset,
    )


def register() -> None:
    import bpy

    from . import panels, properties, runtime

    for cls in _classes():
        bpy.utils.register_class(cls)
    properties.attach(on_granularity_change=runtime.recolour_from_properties)
    panels.attach_status_bar()
    runtime.reset()


def unregister() -> None:
    import bpy

    from . import panels, properties, runtime

    runtime.shutdown()
    panels.detach_status_bar()
    properties.detach()
    for cls in reversed(_classes()):
        bpy.utils.unregister_class(cls)
