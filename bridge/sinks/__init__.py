"""Where lines go. One sink today: journald/."""
