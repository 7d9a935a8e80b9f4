"""Research recipes built on keras_hash: CIFAR-10 protocols, airbench, dtype choice.

``import keras_hash`` does not import this package: it holds what the
CIFAR-10 example and the experiments need (the split protocols of the
deep-hashing literature, airbench's backbone and pre-training recipe, the
dtype-policy heuristics and the named training presets), not what a user
needs to hash their own data. Import the modules by name:

```python
from keras_hash.recipes import airbench, cifar, presets
```
"""
