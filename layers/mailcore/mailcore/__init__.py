"""mailcore: the domain library shared by the mail functions (a Lambda layer)."""
