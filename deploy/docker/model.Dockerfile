# A model as its own small, immutable, versioned image: /models/model.onnx and nothing
# else of note, so code and model are released independently. On Kubernetes an
# initContainer seeds the models claim with it when the claim holds no model yet
# (deploy/kubernetes/deployment.yaml); from then on the retrain CronJob publishes there.
#
#   docker build -f deploy/docker/model.Dockerfile -t my.registry/streamcast-model:pedestrian-v1 \
#       models/pedestrian          # the build context is the directory holding model.onnx
FROM busybox:1.37.0

COPY --chmod=0444 model.onnx /models/model.onnx
USER 10001:10001
CMD ["cp", "/models/model.onnx", "/model-volume/model.onnx"]
