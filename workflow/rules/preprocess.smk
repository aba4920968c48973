# N4 -> registration -> skull strip per session (filled in by the preprocessing work).
