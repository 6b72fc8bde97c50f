# The embedded synthetic data set (tools/create_data.py synthetic, same layout as the release):
# every frame kept (the generator writes frames 0.5 s apart), the pipelines of ./waymo-trackocc.py.
_base_ = ['./waymo-trackocc.py']

data_root = 'data/synthetic-waymo/'
load_interval = 1
train_dataloader = dict(
    num_workers=2, dataset=dict(data_root=data_root, load_interval=load_interval))
val_dataloader = dict(
    num_workers=2, dataset=dict(data_root=data_root, load_interval=load_interval))
test_dataloader = val_dataloader
