"""CT: adaptive angle selection (angles mode) and its reconstruction (SIRT)."""
