"""The segmentation service: segment rules over behavioural metrics, static segments, materialised memberships."""
