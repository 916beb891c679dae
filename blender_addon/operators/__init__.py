"""One operator per module (``USEG_OT_<name>``, ``bl_idname = "useg.<name>"``), each with poll and report."""
