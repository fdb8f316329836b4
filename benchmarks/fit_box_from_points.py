import numpy as np
from pathlib import Path
from autolabel.datasets import find_samples, detect_boxes
from autolabel.resources import data_root
from autolabel.detectors import make_detector
from autolabel.geometry import points_box
root = data_root()/"300w"
s = detect_boxes(find_samples(root/"afw", root/"helen/trainset", root/"lfpw"), make_detector("hog"), cache=Path("/tmp/hogcache.json"), progress=False)
dx=[];dy=[];sd=[];ext=[]
for x in s:
    if x.box is None: continue
    b=points_box(x.points); side=max(b.width,b.height)
    dx.append((x.box.center[0]-b.center[0])/side); dy.append((x.box.center[1]-b.center[1])/side); sd.append(x.box.width/side)
    # how far points extend relative to hog box center, in units of box width
    c=np.array(x.box.center); p=(x.points-c)/x.box.width
    ext.append([p[:,0].min(),p[:,0].max(),p[:,1].min(),p[:,1].max()])
for n,v in [("dx",dx),("dy",dy),("side",sd)]: v=np.array(v); print(n, np.median(v), v.mean(), v.std())
e=np.array(ext); print("ext pct 1/99", np.percentile(e,[1,50,99],axis=0))
print(len(dx), len(s))
