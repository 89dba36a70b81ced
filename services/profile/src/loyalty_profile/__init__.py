"""Customer profiles: identifiers, consents, custom attributes, merges, GDPR export and erasure."""
