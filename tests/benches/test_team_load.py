"""The team-load bench's double-lease check: planted handovers pass, a planted overlap is found."""

from benches.team_load import double_leases

L = 60.0  # lease seconds


def test_handovers_are_not_double_leases():
    events = [
        ("lease", "ana", "x", 0.0, 0.1),
        ("submit", "ana", "x", 5.0, 5.1),
        ("lease", "bo", "x", 5.05, 5.2),  # bo was handed x after ana's submit began
        ("lease", "cy", "y", 0.0, 0.1),  # cy leaves y: it expires at 60
        ("lease", "bo", "y", 60.5, 60.6),
        ("lease", "ana", "z", 0.0, 0.1),
        ("renew", "ana", "z", 50.0, 50.1),  # renewed: surely held until 110
        ("submit", "ana", "z", 100.0, 100.1),
        ("lease", "cy", "z", 100.0, 100.2),
    ]
    assert double_leases(events, L) == 0


def test_an_overlap_is_a_double_lease():
    events = [
        ("lease", "ana", "x", 0.0, 0.1),
        ("lease", "bo", "x", 30.0, 30.1),  # ana holds x until 60 and has not submitted
        ("submit", "ana", "x", 40.0, 40.1),
        ("lease", "ana", "z", 0.0, 0.1),
        ("renew", "ana", "z", 50.0, 50.1),
        ("lease", "cy", "z", 70.0, 70.1),  # ana's renewal keeps z until 110
    ]
    assert double_leases(events, L) == 2
