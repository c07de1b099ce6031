# The in-RAM trainer of commit e22d262 (before streaming), run through its Python API (its CLI at that commit
# already passed --device to a TrainConfig that lacked it). Augmentation off, as in the streaming run.
import json
import sys

from w2vc.data.augment import AugmentConfig
from w2vc.train import TrainConfig, train

assert "/tmp/oldtrain/" in sys.modules["w2vc.train"].__file__
data, out, js = sys.argv[1:4]
cfg = TrainConfig(arch="base-s", data=data, out=out, steps=40, batch_seconds=15, eval_every=1000, dev_limit=4,
                  threads=2, seed=0, augment=AugmentConfig(p_speed=0, p_bandlimit=0, p_noise=0, gain_db_range=(0.0, 0.0)))
res = train(cfg, progress=False)
json.dump({k: v for k, v in res.items() if isinstance(v, (int, float, str))}, open(js, "w"))
print(res["steps"], res["minutes"])
