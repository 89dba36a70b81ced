"""The fraud service's pure rules: what an action looks like, which counters it needs, and the
decision from the rules that fired. No I/O."""
