"""accel's model server: TF Serving's gRPC PredictionService and REST API, KServe's v2 REST
API, health, reflection, Prometheus metrics, TLS and keys, over compiled models.

    accel serve resnet50.accel --grpc-port 50051 --rest-port 8501

``server.serve(ServeConfig(...))`` runs it in an asyncio loop; ``core.Core`` is the
protocol-independent part, ``models.ServedModel`` one model's queue and device thread.
"""
