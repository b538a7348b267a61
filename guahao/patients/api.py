from ninja import Router

router = Router()
auth_router = Router()
