"""Pydantic models of what users write (boards, systems, sources) and of what a build
hands on (the manifest). Validated once, at the boundary; the rest of the code trusts them."""
