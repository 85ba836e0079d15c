"""Build steps: each module makes Step objects whose build functions are pure."""
