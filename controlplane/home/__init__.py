"""Home, the operator's cockpit: one card per question a person asks on arrival (what
runs, what it costs, whether the engine moves, what breaks, what waits for me, what
changed). Each card is one template fragment and one context function (`cards`); the
page renders them all and `consumer` re-renders the ones an event touched."""
