"""Speed measurement: analytic FLOP counts and device peaks."""
